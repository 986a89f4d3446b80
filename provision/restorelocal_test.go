package provision

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kprov/kprov/internal/etcdtest"
	"github.com/kprov/kprov/internal/filehash"
	"github.com/kprov/kprov/provision/backup"
	"github.com/kprov/kprov/provision/plan"
)

// TestStackedRestoreRunsLocally restores a real snapshot the way kprov
// restore does for a stacked member: etcdutl's code on this machine
// (RestoreDataArchive), then the real script on the "host" (a local sh)
// unpacking the archive into the data directory with its marker. The
// member started from that directory is the new one-member cluster: every
// key, the revision bumped above the snapshot's, only the new member. A
// second run of the same restore does nothing; another restore's run, and
// an archive that does not match its checksum, are refused with nothing
// changed.
func TestStackedRestoreRunsLocally(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real etcd")
	}
	dir := t.TempDir()
	ctx := t.Context()
	old := etcdtest.Start(t, filepath.Join(dir, "old"), "master-1", etcdtest.FreeURL(t))
	const keys = 200
	for i := range keys {
		if _, err := old.Put(ctx, fmt.Sprintf("/registry/test/%04d", i), fmt.Sprintf("value-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	snap := filepath.Join(dir, "snapshot.db")
	if _, err := backup.SaveSnapshot(ctx, old, snap); err != nil {
		t.Fatal(err)
	}
	st, err := old.Get(ctx, "/registry/test/0000")
	if err != nil {
		t.Fatal(err)
	}
	snapRev := st.Header.Revision
	sum, err := filehash.SHA256(snap)
	if err != nil {
		t.Fatal(err)
	}

	peer := etcdtest.FreeURL(t)
	step := plan.Step{Op: plan.OpEtcdRestore, Host: "master-r1", Path: filepath.Join(dir, "etcd"), Source: snap, SHA256: sum,
		Member: "master-r1", PeerURL: peer.String(), InitialCluster: "master-r1=" + peer.String(), ClusterToken: "kprov-lab-restore-0123abcd"}
	if _, _, cleanup, err := RestoreDataArchive(plan.Step{Source: snap, SHA256: strings.Repeat("0", 64)}); err == nil || !strings.Contains(err.Error(), "refusing to restore it") {
		cleanup()
		t.Fatalf("a snapshot that does not match its checksum: %v", err)
	}
	archive, archiveSum, cleanup, err := RestoreDataArchive(step)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	marker := filepath.Join(dir, "kprov", "etcd-restored")
	upload := filepath.Join(dir, "restore-data.tar.gz")
	copyFile := func() {
		data, err := os.ReadFile(archive)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(upload, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run := func(script string) (string, error) {
		out, err := exec.Command("sh", "-c", script).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}

	// An archive that is not the one made: refused, nothing changed.
	if err := os.WriteFile(upload, []byte("not the archive"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := run(scriptEtcdRestoreArchive(step, marker, upload, archiveSum)); err == nil || !strings.Contains(got, "refusing to unpack it") {
		t.Fatalf("a damaged upload: %q, %v", got, err)
	}
	if _, err := os.Stat(step.Path); !os.IsNotExist(err) {
		t.Fatalf("a damaged upload created the data directory: %v", err)
	}

	copyFile()
	if got, err := run(scriptEtcdRestoreArchive(step, marker, upload, archiveSum)); err != nil || got != "changed" {
		t.Fatalf("restore: %q, %v", got, err)
	}
	if fi, err := os.Stat(step.Path); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data directory after the restore: %v, %v", fi, err)
	}
	if _, err := os.Stat(upload); !os.IsNotExist(err) {
		t.Errorf("the uploaded archive was left behind: %v", err)
	}
	if got, _ := run(scriptEtcdRestored(step.Path, marker, step.ClusterToken)); got != "restored" {
		t.Fatalf("restored check: %q", got)
	}
	copyFile()
	if got, err := run(scriptEtcdRestoreArchive(step, marker, upload, archiveSum)); err != nil || got != "" {
		t.Fatalf("second run of the same restore: %q, %v; want nothing done", got, err)
	}
	other := step
	other.ClusterToken = "kprov-lab-restore-ffffffff"
	copyFile()
	if got, err := run(scriptEtcdRestoreArchive(other, marker, upload, archiveSum)); err == nil || !strings.Contains(got, "refusing to restore into "+step.Path) {
		t.Fatalf("another restore over this one's data: %q, %v", got, err)
	}

	// The member kubeadm's etcd would start from that directory.
	cli := etcdtest.Start(t, step.Path, "master-r1", peer)
	resp, err := cli.Get(ctx, "/registry/test/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != keys {
		t.Errorf("read back %d keys, want %d", len(resp.Kvs), keys)
	}
	for i, kv := range resp.Kvs {
		if string(kv.Value) != fmt.Sprintf("value-%d", i) {
			t.Errorf("%s = %q", kv.Key, kv.Value)
			break
		}
	}
	if resp.Header.Revision < snapRev+plan.EtcdRestoreRevisionBump {
		t.Errorf("revision %d, want the snapshot's %d plus the bump %d", resp.Header.Revision, snapRev, plan.EtcdRestoreRevisionBump)
	}
	// Old revisions are marked compacted: a watcher asking for one is told so.
	if _, err := cli.Get(ctx, "/registry/test/0000", clientv3.WithRev(snapRev)); err == nil || !strings.Contains(err.Error(), "compacted") {
		t.Errorf("read at the snapshot's revision: %v, want compacted", err)
	}
	list, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Members) != 1 || list.Members[0].Name != "master-r1" || list.Members[0].PeerURLs[0] != peer.String() {
		t.Errorf("members %v, want master-r1 at %s alone", list.Members, peer.String())
	}
}
