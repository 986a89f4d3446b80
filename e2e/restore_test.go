//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/charmbracelet/log"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/lab"
)

// restoreSubnets is where the restore tests' new labs get their subnets.
var restoreSubnets = netip.MustParsePrefix("198.19.0.0/16")

// TestRestoreExternalEtcd is a scripted disaster-recovery rebuild on lab
// machines (issue 14):
//
//   - an ha-external lab is applied, 1,000 keys are written with etcd's
//     client, and kprov backup takes a backup;
//   - the lab is destroyed, and a new one comes up with other machine names
//     (etcd-r1.., master-r1..) on another subnet; its inventory keeps the
//     old cluster's name;
//   - a corrupted backup and a backup of another cluster are refused
//     before any host is touched (no state directory, nothing on the hosts);
//   - kprov restore is interrupted (Ctrl-C) as the snapshot stage starts
//     (on the lab so far that left the hosts prepared and no member
//     restored; the hosts' state is logged);
//   - kprov restore run again rebuilds the cluster: every key reads back with its
//     value, the member list holds only the new members, the revision
//     served is above the snapshot's, Kubernetes is back (kubeadm init
//     against the restored etcd with the same CAs) and only the new hosts'
//     Node objects are left;
//   - a second kprov restore restores nothing again, and kprov apply then
//     prints No changes.
func TestRestoreExternalEtcd(t *testing.T) {
	runsBeside(t, true)
	specs, err := lab.TopologyMachines("ha-external")
	if err != nil {
		t.Fatal(err)
	}
	old := upAppliedLab(t, specs)
	inv := old.InventoryPath()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()

	cli := etcdClient(t, ctx, old, inv)
	writeRestoreKeys(t, ctx, cli)
	cli.Close()
	dir := t.TempDir()
	file := filepath.Join(dir, "lab.kprov-backup")
	b, stderr, err := kprovJSON(t, "-f", inv, "backup", "-o", file, "--json")
	if err != nil {
		t.Fatalf("backup: %v\n%s", err, stderr)
	}
	t.Logf("backup: revision %d, %d keys, %d bytes", b.Manifest.Revision, b.Manifest.TotalKeys, b.Size)

	// The disaster: every machine of the old lab is gone; new machines,
	// new names, another subnet, the old cluster's name.
	cluster := old.Name()
	l, newSubnet, newInv := afterDisaster(t, ctx, old, specs)
	stateDir := filepath.Join(filepath.Dir(newInv), ".kprov", cluster)

	// Refused before any host is touched: a corrupted backup, and a backup
	// of another cluster.
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(data)
	flipped[len(data)/2] ^= 0x01
	bad := filepath.Join(dir, "bad.kprov-backup")
	if err := os.WriteFile(bad, flipped, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := kprovErr(t, "-f", newInv, "restore", bad, "--auto-approve"); exitCode(err) != 1 || !strings.Contains(out, "snapshot.db") {
		t.Errorf("restore of a corrupted backup: %v, want exit 1 naming snapshot.db\n%s", err, out)
	}
	otherInv := sameClusterInventory(t, l, "other-cluster", "other.kprov.hcl")
	if out, err := kprovErr(t, "-f", otherInv, "restore", file, "--auto-approve"); exitCode(err) != 1 || !strings.Contains(out, fmt.Sprintf("the backup is of cluster %q, not %q", cluster, "other-cluster")) {
		t.Errorf("restore of another cluster's backup: %v\n%s", err, out)
	}
	for _, d := range []string{stateDir, filepath.Join(filepath.Dir(otherInv), ".kprov", "other-cluster")} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("a refused restore created state directory %s (%v)", d, err)
		}
	}
	for _, m := range l.Machines() {
		if out, err := l.Output(ctx, m.Name, "ls -A /etc/kprov /etc/etcd /var/lib/kprov /var/lib/etcd /usr/local/bin/etcdutl 2>/dev/null; true"); err != nil || len(bytes.TrimSpace(out)) != 0 {
			t.Errorf("%s was touched by a refused restore: %v\n%s", m.Name, err, out)
		}
	}

	// Interrupted: Ctrl-C as the snapshot stage starts, so the run stops
	// while members are being restored (each host's marker says how far it
	// got). The run after it must continue from there.
	run := startApplyUntil(t, ctx, "[etcd] restoring the snapshot", "-f", newInv, "restore", file, "--auto-approve")
	if err := run.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if out, err := run.wait(); err == nil {
		t.Logf("the interrupted restore finished before Ctrl-C reached it:\n%s", out)
	}
	for _, m := range []string{"etcd-r1", "etcd-r2", "etcd-r3"} {
		out, _ := l.Output(ctx, m, "cat /etc/kprov/etcd-restored 2>&1; ls -A /var/lib/etcd 2>&1; systemctl is-active etcd")
		t.Logf("%s after the interrupted restore: %s", m, bytes.Join(bytes.Fields(out), []byte(" ")))
	}

	// The restore, run again after the interruption.
	runRestore(t, "restore", "-f", newInv, "restore", file, "--auto-approve")
	cli = etcdClientState(t, ctx, l, stateDir)
	defer cli.Close()
	assertRestoredKeys(t, ctx, cli, b.Manifest.Revision)
	list, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var ids []uint64
	for _, m := range list.Members {
		names = append(names, m.Name)
		ids = append(ids, m.ID)
		for _, u := range m.PeerURLs {
			if !strings.Contains(u, strings.TrimSuffix(newSubnet.Addr().String(), ".0")+".") {
				t.Errorf("member %s has peer URL %s outside the new subnet %s", m.Name, u, newSubnet)
			}
		}
		if m.IsLearner {
			t.Errorf("member %s is a learner", m.Name)
		}
	}
	slices.Sort(names)
	if strings.Join(names, ",") != "etcd-r1,etcd-r2,etcd-r3" {
		t.Errorf("members %v, want only the new ones", names)
	}
	nodes, err := l.Output(ctx, "master-r1", "kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes -o name")
	if err != nil {
		t.Errorf("kubectl get nodes on master-r1: %v\n%s", err, nodes)
	}
	var gotNodes []string
	for _, n := range strings.Fields(string(nodes)) {
		gotNodes = append(gotNodes, strings.TrimPrefix(n, "node/"))
	}
	slices.Sort(gotNodes)
	if strings.Join(gotNodes, ",") != "compute-r1,infra-r1,master-r1,master-r2" {
		t.Errorf("nodes %v, want only the new hosts' (the old ones deleted)", gotNodes)
	}

	// Run again: nothing restored twice, the same members, the keys still there.
	out := runRestore(t, "second restore", "-f", newInv, "restore", file, "--auto-approve")
	if strings.Contains(out, "etcd-restore") || strings.Contains(out, "restoring the snapshot") {
		t.Errorf("the second restore restored again:\n%s", out)
	}
	again, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids2 []uint64
	for _, m := range again.Members {
		ids2 = append(ids2, m.ID)
	}
	slices.Sort(ids)
	slices.Sort(ids2)
	if !slices.Equal(ids, ids2) || again.Header.ClusterId != list.Header.ClusterId {
		t.Errorf("members changed by the second restore: %x (cluster %x), then %x (cluster %x)", ids, list.Header.ClusterId, ids2, again.Header.ClusterId)
	}
	if resp, err := cli.Get(ctx, "/kprov-e2e/restore/", clientv3.WithPrefix()); err != nil || len(resp.Kvs) != restoreKeys {
		t.Errorf("after the second restore: %v keys, %v", len(resp.Kvs), err)
	}
	out = kprov(t, "-f", newInv, "apply", "--auto-approve")
	if !strings.Contains(out, "No changes.") {
		t.Errorf("apply after the restore:\n%s", out)
	}
}

// sameClusterInventory writes, beside the lab's inventory (so the keys and
// known_hosts it names resolve the same), a copy whose cluster is named
// cluster.
func sameClusterInventory(t *testing.T, l *lab.Lab, cluster, name string) string {
	t.Helper()
	data, err := os.ReadFile(l.InventoryPath())
	if err != nil {
		t.Fatal(err)
	}
	from := "cluster " + strconv.Quote(l.Name()) + " {"
	if !bytes.Contains(data, []byte(from)) {
		t.Fatalf("%s has no %q", l.InventoryPath(), from)
	}
	data = bytes.Replace(data, []byte(from), []byte("cluster "+strconv.Quote(cluster)+" {"), 1)
	path := filepath.Join(filepath.Dir(l.InventoryPath()), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, diags := inventory.Load(path, inventory.Options{}); diags.HasErrors() {
		t.Fatalf("%s: %s", path, diags.Error())
	}
	return path
}

// restoreKeys is how many keys the restore tests write before the backup.
const restoreKeys = 1000

// writeRestoreKeys writes the restore tests' keys with etcd's client.
func writeRestoreKeys(t *testing.T, ctx context.Context, cli *clientv3.Client) {
	t.Helper()
	for i := range restoreKeys {
		if _, err := cli.Put(ctx, fmt.Sprintf("/kprov-e2e/restore/%04d", i), fmt.Sprintf("value-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
}

// assertRestoredKeys reads back every key writeRestoreKeys wrote, with its
// value, and checks the revision served is the snapshot's plus the bump at
// least.
func assertRestoredKeys(t *testing.T, ctx context.Context, cli *clientv3.Client, snapshotRevision int64) {
	t.Helper()
	resp, err := cli.Get(ctx, "/kprov-e2e/restore/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != restoreKeys {
		t.Errorf("read back %d keys, want %d", len(resp.Kvs), restoreKeys)
	}
	for i, kv := range resp.Kvs {
		if want := fmt.Sprintf("value-%d", i); string(kv.Key) != fmt.Sprintf("/kprov-e2e/restore/%04d", i) || string(kv.Value) != want {
			t.Errorf("key %d: %s = %q, want %q", i, kv.Key, kv.Value, want)
			break
		}
	}
	if resp.Header.Revision < snapshotRevision+1_000_000_000 {
		t.Errorf("revision served %d, want above the snapshot's %d plus the bump", resp.Header.Revision, snapshotRevision)
	}
}

// runRestore runs kprov with args (a restore), logs how long it took and
// what it printed, and fails the test when it fails.
func runRestore(t *testing.T, what string, args ...string) string {
	t.Helper()
	start := time.Now()
	out, err := kprovErr(t, args...)
	t.Logf("%s took %s:\n%s", what, time.Since(start).Round(time.Second), out)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return out
}

// upAppliedLab boots a lab of specs and applies its inventory: the cluster
// a restore test backs up.
func upAppliedLab(t *testing.T, specs []lab.MachineSpec) *lab.Lab {
	t.Helper()
	l := UpLab(t, specs)
	start := time.Now()
	out, err := kprovErr(t, "-f", l.InventoryPath(), "apply", "--auto-approve")
	assertApplied(t, out, err)
	t.Logf("apply took %s", time.Since(start).Round(time.Second))
	return l
}

// afterDisaster destroys the old lab and boots its machines renamed on
// another subnet (upRestoreLab); it returns the new lab, its subnet, and
// the inventory of the rebuilt cluster: the new lab's hosts with the old
// cluster's name (a backup restores only onto its own cluster).
func afterDisaster(t *testing.T, ctx context.Context, old *lab.Lab, specs []lab.MachineSpec) (*lab.Lab, netip.Prefix, string) {
	t.Helper()
	cluster, oldSubnet := old.Name(), old.Subnet()
	logger := log.NewWithOptions(os.Stderr, log.Options{Prefix: t.Name()})
	if err := lab.Down(ctx, old.Name(), old.Dir(), logger); err != nil {
		t.Fatal(err)
	}
	l, subnet := upRestoreLab(t, specs, oldSubnet)
	return l, subnet, sameClusterInventory(t, l, cluster, "restore.kprov.hcl")
}

// upRestoreLab boots the machines of specs renamed (master-1 becomes
// master-r1) on another subnet than old: the first free /24 of the upper
// half of the lab range (restoreSubnets), which the first-free pick of
// other labs never reaches while fewer than 256 labs run, picked under the
// lab's host-wide lock so a restore test running beside this one never
// takes the same.
func upRestoreLab(t *testing.T, specs []lab.MachineSpec, old netip.Prefix) (*lab.Lab, netip.Prefix) {
	t.Helper()
	var renamed []lab.MachineSpec
	for _, s := range specs {
		renamed = append(renamed, lab.MachineSpec{Name: strings.Replace(s.Name, "-", "-r", 1), Roles: s.Roles})
	}
	l := UpLab(t, renamed, func(o *lab.Options) { o.SubnetWithin = restoreSubnets })
	if l.Subnet() == old {
		t.Fatalf("the new lab is on the old subnet %s", old)
	}
	return l, l.Subnet()
}
