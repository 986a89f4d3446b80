package backup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kprov/kprov/internal/etcdtest"
)

// testKeys is how many keys the test etcd holds.
const testKeys = 300

var (
	snapOnce sync.Once
	snapPath string
	snapErr  error
	snapDir  string
)

// TestMain removes the shared snapshot's directory, which outlives any
// one test.
func TestMain(m *testing.M) {
	code := m.Run()
	if snapDir != "" {
		os.RemoveAll(snapDir)
	}
	os.Exit(code)
}

// startEtcd starts a one-member embedded etcd with n keys written (some
// overwritten, one deleted, so revision and key count differ) and returns
// a client on it.
func startEtcd(t *testing.T, dir string, n int) *clientv3.Client {
	t.Helper()
	cli := etcdtest.Start(t, dir, "etcd-test", etcdtest.FreeURL(t))
	ctx := t.Context()
	for i := range n {
		if _, err := cli.Put(ctx, fmt.Sprintf("/test/key-%04d", i), strings.Repeat("v", i%100)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Put(ctx, "/test/key-0000", "overwritten"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, "/test/key-0001"); err != nil {
		t.Fatal(err)
	}
	return cli
}

// sharedSnapshot is one real snapshot for the format tests, taken once.
func sharedSnapshot(t *testing.T) string {
	t.Helper()
	snapOnce.Do(func() {
		snapDir, snapErr = os.MkdirTemp("", "kprov-backup-test-*")
		if snapErr != nil {
			return
		}
		cli := startEtcd(t, filepath.Join(snapDir, "etcd"), testKeys)
		snapPath = filepath.Join(snapDir, "snapshot.db")
		_, snapErr = SaveSnapshot(t.Context(), cli, snapPath)
	})
	if snapErr != nil {
		t.Fatal(snapErr)
	}
	return snapPath
}

// TestSnapshotFromEmbeddedEtcd takes a snapshot from a real etcd with the
// code kprov backup runs once its tunnel is up, and checks what etcd reads
// from it: every key written (minus the deleted one) and the revision the
// member served.
func TestSnapshotFromEmbeddedEtcd(t *testing.T) {
	dir := t.TempDir()
	cli := startEtcd(t, filepath.Join(dir, "etcd"), testKeys)
	resp, err := cli.Get(t.Context(), "/test/key-0000")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "snap.db")
	if _, err := SaveSnapshot(t.Context(), cli, path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("snapshot mode %o, want 0600", fi.Mode().Perm())
	}
	st, err := CheckSnapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.TotalKeys != testKeys-1 || st.Revision != resp.Header.Revision || st.Hash == 0 || len(st.SHA256) != 64 {
		t.Errorf("status %+v; want %d keys at revision %d", st, testKeys-1, resp.Header.Revision)
	}
	// A second file refuses to overwrite the first.
	if _, err := SaveSnapshot(t.Context(), cli, path); !errors.Is(err, os.ErrExist) {
		t.Errorf("second snapshot to the same path: %v, want it refused", err)
	}
	// A snapshot with one byte flipped fails etcd's own SHA-256 trailer.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x01
	bad := filepath.Join(dir, "bad.db")
	if err := os.WriteFile(bad, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckSnapshot(bad); err == nil || !strings.Contains(err.Error(), "SHA-256 trailer") {
		t.Errorf("flipped byte: %v, want the trailer mismatch", err)
	}
	if err := os.WriteFile(bad, data[:len(data)-100], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckSnapshot(bad); err == nil || !strings.Contains(err.Error(), "cut short") {
		t.Errorf("truncated snapshot: %v", err)
	}
}

// fixture writes a backup of the shared snapshot, an inventory and two
// state files, and returns its bytes and the manifest Write returned.
// checkedSnapshot is the shared snapshot with etcd's view of it.
func checkedSnapshot(t *testing.T) (string, SnapshotStatus) {
	t.Helper()
	snap := sharedSnapshot(t)
	st, err := CheckSnapshot(snap)
	if err != nil {
		t.Fatal(err)
	}
	return snap, st
}

func fixture(t *testing.T, recipients ...age.Recipient) ([]byte, Manifest) {
	t.Helper()
	snap, st := checkedSnapshot(t)
	dir := t.TempDir()
	files := map[string]string{"kprov.hcl": `cluster "lab" {}`, "ca.key": "-----BEGIN PRIVATE KEY-----\nsecret\n", "ca.crt": "cert"}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m := Manifest{Cluster: "lab", KubernetesVersion: "1.37.2", EtcdVersion: "3.6.16", EtcdMode: "external",
		Members: []Member{{ID: "8e9e05c52164694d", Name: "etcd-1", PeerURLs: []string{"https://10.0.0.1:2380"}}},
		Source:  "etcd-1", Revision: st.Revision, TotalKeys: st.TotalKeys, SnapshotHash: st.Hash, Time: time.Unix(1700000000, 0).UTC(), KprovVersion: "test"}
	sources := []Source{
		{Name: SnapshotName, Path: snap},
		{Name: InventoryPrefix + "kprov.hcl", Path: filepath.Join(dir, "kprov.hcl")},
		{Name: StatePrefix + "pki/ca.key", Path: filepath.Join(dir, "ca.key")},
		{Name: StatePrefix + "pki/ca.crt", Path: filepath.Join(dir, "ca.crt")},
	}
	var buf bytes.Buffer
	var w io.Writer = &buf
	var enc io.WriteCloser
	var err error
	if len(recipients) > 0 {
		if enc, err = age.Encrypt(&buf, recipients...); err != nil {
			t.Fatal(err)
		}
		w = enc
	}
	got, err := Write(w, m, sources)
	if err != nil {
		t.Fatal(err)
	}
	if enc != nil {
		if err := enc.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes(), got
}

func TestRoundTrip(t *testing.T) {
	data, written := fixture(t)
	b, err := Open(bytes.NewReader(data), Options{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	m := b.Manifest
	if m.Cluster != "lab" || m.Format != FormatVersion || len(m.Parts) != 4 || b.Encrypted {
		t.Fatalf("manifest %+v", m)
	}
	if m.TotalKeys != testKeys-1 || b.Snapshot.Revision != written.Revision || m.Members[0].Name != "etcd-1" {
		t.Errorf("manifest %+v, snapshot %+v", m, b.Snapshot)
	}
	if err := m.CheckCluster("lab"); err != nil {
		t.Error(err)
	}
	if err := m.CheckCluster("prod"); err == nil || !strings.Contains(err.Error(), `cluster "lab", not "prod"`) {
		t.Errorf("another cluster's backup: %v", err)
	}
	if st := b.StateParts(); len(st) != 2 || st[0].Name != "state/pki/ca.key" || st[0].Mode != 0o600 {
		t.Errorf("state parts %+v", st)
	}
	r, err := b.OpenPart("state/pki/ca.key")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	r.Close()
	if string(got) != "-----BEGIN PRIVATE KEY-----\nsecret\n" {
		t.Errorf("ca.key reads %q", got)
	}
	if _, err := b.OpenPart("../etc/passwd"); err == nil {
		t.Error("a part not in the manifest opened")
	}
	if _, err := CheckSnapshot(b.SnapshotPath()); err != nil {
		t.Error(err)
	}
	dir := b.dir
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Close left %s: %v", dir, err)
	}
}

// TestFlippedByteRefused flips one byte at a time across the file (every
// part, tar header and padding, the manifest and the trailer) and wants
// each copy refused with the part it hit named. Around the snapshot every
// 7th byte gets its turn; inside it, fewer (its own checksum is one).
func TestFlippedByteRefused(t *testing.T) {
	data, m := fixture(t)
	snap, err := os.ReadFile(sharedSnapshot(t))
	if err != nil {
		t.Fatal(err)
	}
	start := bytes.Index(data, snap)
	if start < 0 {
		t.Fatal("the snapshot is not stored as is")
	}
	end := start + len(snap)
	var offsets []int
	for off := 0; off < len(data); {
		offsets = append(offsets, off)
		if off > start+1024 && off < end-1024 {
			off = min(off+4099, end-1024)
		} else {
			off += 7
		}
	}
	tmp := t.TempDir()
	named := map[string]int{}
	for _, off := range offsets {
		bad := bytes.Clone(data)
		bad[off] ^= 0x20
		_, err := Open(bytes.NewReader(bad), Options{TempDir: tmp})
		var pe *PartError
		if !errors.As(err, &pe) {
			t.Fatalf("byte %d of %d flipped: %v, want a PartError", off, len(data), err)
		}
		named[pe.Part]++
	}
	t.Logf("%d flips over %d bytes (snapshot %d-%d): %v", len(offsets), len(data), start, end, named)
	for _, p := range m.Parts {
		if named[p.Name] == 0 {
			t.Errorf("no flipped byte was reported as part %s", p.Name)
		}
	}
	for _, p := range []string{ManifestName, manifestSumName, "the archive"} {
		if named[p] == 0 {
			t.Errorf("no flipped byte was reported as %s", p)
		}
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Errorf("refused backups left %d directories in %s", len(entries), tmp)
	}
}

// TestPartCorruptedNamed flips a byte inside each part's content and wants
// that part named, with the manifest's checksum for it.
func TestPartCorruptedNamed(t *testing.T) {
	data, m := fixture(t)
	parts := map[string][]byte{"inventory/kprov.hcl": []byte(`cluster "lab" {}`), "state/pki/ca.key": []byte("secret\n"), "state/pki/ca.crt": []byte("cert")}
	snap, err := os.ReadFile(sharedSnapshot(t))
	if err != nil {
		t.Fatal(err)
	}
	parts[SnapshotName] = snap[4096:4200]
	parts[ManifestName] = []byte(`"cluster": "lab"`)
	for name, content := range parts {
		i := bytes.Index(data, content)
		if i < 0 {
			t.Fatalf("%s: content not found in the archive", name)
		}
		bad := bytes.Clone(data)
		bad[i+len(content)/2] ^= 0x01
		_, err := Open(bytes.NewReader(bad), Options{TempDir: t.TempDir()})
		var pe *PartError
		if !errors.As(err, &pe) || pe.Part != name {
			t.Errorf("%s damaged: %v, want it named", name, err)
		}
		if p, ok := m.Part(name); ok && !strings.Contains(err.Error(), p.SHA256) {
			t.Errorf("%s damaged: %v, want the manifest's SHA-256 in it", name, err)
		}
	}
}

func TestTruncatedRefused(t *testing.T) {
	data, _ := fixture(t)
	for _, n := range []int{0, 100, 512, len(data) / 2, len(data) - 1024, len(data) - 33, len(data) - 1} {
		_, err := Open(bytes.NewReader(data[:n]), Options{TempDir: t.TempDir()})
		if err == nil {
			t.Errorf("cut to %d of %d bytes: accepted", n, len(data))
			continue
		}
		t.Logf("cut to %d: %v", n, err)
	}
	// Bytes after the trailer are not the trailer.
	if _, err := Open(bytes.NewReader(append(bytes.Clone(data), 0)), Options{TempDir: t.TempDir()}); err == nil {
		t.Error("a byte appended: accepted")
	}
}

func TestEncryptedRoundTrip(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	data, _ := fixture(t, id.Recipient())
	if bytes.Contains(data, []byte("secret")) || bytes.Contains(data, []byte(ManifestName)) {
		t.Fatal("the encrypted file shows its contents")
	}
	if _, err := Open(bytes.NewReader(data), Options{TempDir: t.TempDir()}); !errors.Is(err, ErrEncrypted) {
		t.Errorf("no identity: %v, want ErrEncrypted", err)
	}
	other, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(bytes.NewReader(data), Options{Identities: []age.Identity{other}, TempDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "no identity given matches") {
		t.Errorf("wrong identity: %v", err)
	}
	b, err := Open(bytes.NewReader(data), Options{Identities: []age.Identity{other, id}, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !b.Encrypted || b.Manifest.Cluster != "lab" {
		t.Errorf("encrypted %v, manifest %+v", b.Encrypted, b.Manifest)
	}
	// A flipped byte in the ciphertext fails age's authentication.
	bad := bytes.Clone(data)
	bad[len(bad)-100] ^= 0x01
	if _, err := Open(bytes.NewReader(bad), Options{Identities: []age.Identity{id}, TempDir: t.TempDir()}); err == nil {
		t.Error("flipped ciphertext byte: accepted")
	}
}

// TestWriteRefusesBadNames keeps parts inside the directories Open
// extracts them to.
func TestWriteRefusesBadNames(t *testing.T) {
	f := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"state/../../etc/passwd", "/etc/passwd", "other/file", "state//x"} {
		if _, err := Write(io.Discard, Manifest{}, []Source{{Name: name, Path: f}}); err == nil {
			t.Errorf("part %q accepted", name)
		}
	}
}

func TestWriteNotEtcd(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "snap")
	if err := os.WriteFile(f, bytes.Repeat([]byte{1}, 512+32), 0o600); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := Write(&buf, Manifest{Cluster: "x"}, []Source{{Name: SnapshotName, Path: f}}); err != nil {
		t.Fatal(err)
	}
	_, err := Open(&buf, Options{TempDir: dir})
	var pe *PartError
	if !errors.As(err, &pe) || pe.Part != SnapshotName {
		t.Errorf("a backup whose snapshot is not etcd's: %v", err)
	}
}
