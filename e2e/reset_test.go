//go:build e2e

package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/lab"
)

// resetSpecs is the smallest lab where one etcd member can be reset as a
// scale-in: five external etcd members (four stay, which tolerate a
// failure) and the master an inventory needs. The refusal for one member
// of three is proven without a lab, by roles' TestPlanResetEtcdQuorum with
// the planner the CLI runs; on the lab the same rule refuses two members of
// the four left after the scale-in (4 -> 2), which costs one more kprov run,
// not a second lab.
func resetSpecs() []lab.MachineSpec {
	var specs []lab.MachineSpec
	for _, n := range []string{"etcd-1", "etcd-2", "etcd-3", "etcd-4", "etcd-5"} {
		specs = append(specs, lab.MachineSpec{Name: n, Roles: []inventory.Role{inventory.RoleEtcd}})
	}
	return append(specs, lab.MachineSpec{Name: "master-1", Roles: []inventory.Role{inventory.RoleMaster}})
}

// resetPaths are what kprov puts on a host, whatever its role; after a
// reset none of them may be there.
var resetPaths = append(slices.Clone(kprovPaths),
	"/var/lib/kubelet", "/etc/cni", "/opt/cni", "/etc/containerd",
	"/usr/local/bin/etcdctl", "/usr/local/bin/etcdutl", "/usr/local/bin/kubectl", "/usr/local/bin/containerd",
	"/usr/local/bin/runc", "/usr/local/bin/kprov-apiproxy",
	"/etc/systemd/system/kubelet.service", "/etc/systemd/system/containerd.service",
	"/etc/systemd/system/kprov-pod-routes.service", "/etc/systemd/system/kprov-apiproxy.service",
)

// assertClean checks that the machines hold none of resetPaths, run none
// of kprov's services, and have no process left of etcd, containerd, the
// kubelet or a container kubeadm started (a shim or a pod surviving the
// reset would hold ports and inotify instances the next apply needs).
func assertClean(t *testing.T, ctx context.Context, l *lab.Lab, machines ...string) {
	t.Helper()
	for _, m := range machines {
		out, err := l.Output(ctx, m, "ls -d "+strings.Join(resetPaths, " ")+" 2>/dev/null; for u in etcd kubelet containerd kprov-apiproxy kprov-pod-routes; do if systemctl is-active --quiet $u; then echo active: $u; fi; done; "+
			"pgrep -l '^(kube-|kubelet$|etcd$|containerd|coredns$|pause$)' | sed 's/^/running: /'; true")
		if err != nil {
			t.Errorf("%s: %v", m, err)
			continue
		}
		if s := strings.TrimSpace(string(out)); s != "" {
			t.Errorf("%s is not clean after kprov reset: %s", m, strings.ReplaceAll(s, "\n", " "))
		}
	}
}

// TestResetExternalEtcd forms five external etcd members and a master,
// then, with the etcd load harness writing throughout:
//
//   - kprov reset --host etcd-1 without a terminal and without
//     --auto-approve is refused with exit 2, nothing changed;
//   - kprov reset --host etcd-1 --auto-approve is a scale-in: the member is
//     removed while every other member is healthy, then stopped and wiped;
//     etcd lists four members, every acknowledged write reads back, and
//     etcd's status never showed more than one member not answering (the
//     one removed); etcd-1 holds nothing of kprov's; a second run prints
//     No changes;
//   - kprov reset --host etcd-2 --host etcd-3 is then refused (exit 1):
//     four members would keep two;
//   - kprov reset --auto-approve takes every host back to clean (checked
//     path by path on the machines), and a second run prints No changes;
//   - a fresh kprov apply then forms the cluster again (five members, the
//     master Ready), and a second apply prints No changes.
func TestResetExternalEtcd(t *testing.T) {
	runsBeside(t, false)
	l := UpLab(t, resetSpecs())
	inv := l.InventoryPath()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	all := []string{"etcd-1", "etcd-2", "etcd-3", "etcd-4", "etcd-5", "master-1"}

	out, err := kprovErr(t, "-f", inv, "apply", "--auto-approve")
	assertApplied(t, out, err)
	waitMembers(t, ctx, l, inv, 5)
	cli := etcdClient(t, ctx, l, inv)
	defer cli.Close()

	// No terminal, no --auto-approve: exit 2, nothing changed.
	out, err = kprovErr(t, "-f", inv, "reset", "--host", "etcd-1")
	if exitCode(err) != 2 || !strings.Contains(out, "kprov reset again with --auto-approve") {
		t.Fatalf("reset --host without a terminal: %v, want exit 2 naming --auto-approve\n%s", err, out)
	}
	if list, err := cli.MemberList(ctx); err != nil || len(list.Members) != 5 {
		t.Fatalf("after the refused reset: %v members, %v", list, err)
	}

	// One member of five: a scale-in, under load.
	load := startEtcdLoad(t, ctx, l, inv)
	start := time.Now()
	out, err = kprovErr(t, "-f", inv, "reset", "--host", "etcd-1", "--auto-approve")
	took := time.Since(start)
	figures := load.stop()
	if err != nil {
		t.Fatalf("reset --host etcd-1: %v\n%s", err, out)
	}
	t.Logf("reset --host etcd-1 took %s; writes during it: %s\n%s", took.Round(100*time.Millisecond), figures, out)
	removing := strings.Index(out, "[etcd] removing member etcd-1: done")
	resetting := strings.Index(out, "[reset] resetting etcd-1: kubeadm state, units and kprov's files ...")
	if removing < 0 || resetting < 0 || removing > resetting {
		t.Errorf("want the member removed (and stopped and wiped) before the host is cleaned:\n%s", out)
	}
	if !strings.Contains(out, "the next kprov apply adds it back unless it is removed from the inventory") {
		t.Errorf("the output does not say the next apply adds etcd-1 back:\n%s", out)
	}
	// The watcher polls all five members throughout: the removed one stops
	// answering for good, and moving leadership off etcd-1 (the first
	// member, which usually leads) leaves the others without a leader for
	// a moment. At most two of five not answering means at least three
	// answered with a leader at every poll: a quorum of the five and of
	// the four that stay.
	if figures.maxDown > 2 {
		t.Errorf("etcd's status showed %d of 5 members not answering at once during the scale-in: a quorum was lost", figures.maxDown)
	}
	load.verify(t, ctx, cli)
	list, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range list.Members {
		names = append(names, m.Name)
		if m.IsLearner {
			t.Errorf("%s is a learner after the scale-in", m.Name)
		}
		if len(m.ClientURLs) == 0 {
			continue
		}
		if st, err := cli.Status(ctx, m.ClientURLs[0]); err != nil || st.Leader == 0 {
			t.Errorf("%s after the scale-in: %v (leader %v)", m.Name, err, st)
		}
	}
	slices.Sort(names)
	if strings.Join(names, ",") != "etcd-2,etcd-3,etcd-4,etcd-5" {
		t.Errorf("members after reset --host etcd-1: %v, want etcd-2..5", names)
	}
	assertClean(t, ctx, l, "etcd-1")

	// Two of the four left: refused, nothing changed.
	out, err = kprovErr(t, "-f", inv, "reset", "--host", "etcd-2", "--host", "etcd-3", "--auto-approve")
	if exitCode(err) != 1 || !strings.Contains(out, "has 4 voting members and would keep 2, fewer than 3") || !strings.Contains(out, "grow the cluster first") {
		t.Errorf("reset of two of four members: %v, want exit 1 refusing it and saying what to do\n%s", err, out)
	}
	if list, err := cli.MemberList(ctx); err != nil || len(list.Members) != 4 {
		t.Errorf("after the refused reset: %v, %v; want the four members", list, err)
	}

	out, err = kprovErr(t, "-f", inv, "reset", "--host", "etcd-1", "--auto-approve")
	if err != nil || !strings.Contains(out, "No changes") {
		t.Errorf("a second reset --host etcd-1: %v, want No changes\n%s", err, out)
	}

	// The whole cluster.
	start = time.Now()
	out, err = kprovErr(t, "-f", inv, "reset", "--auto-approve")
	if err != nil {
		t.Fatalf("reset: %v\n%s", err, out)
	}
	t.Logf("reset of the whole cluster took %s", time.Since(start).Round(100*time.Millisecond))
	assertClean(t, ctx, l, all...)
	out, err = kprovErr(t, "-f", inv, "reset", "--auto-approve")
	if err != nil || !strings.Contains(out, "No changes") {
		t.Errorf("a second reset: %v, want No changes\n%s", err, out)
	}

	// A fresh apply works on the reset hosts.
	start = time.Now()
	out, err = kprovErr(t, "-f", inv, "apply", "--auto-approve")
	assertApplied(t, out, err)
	t.Logf("apply after the reset took %s", time.Since(start).Round(100*time.Millisecond))
	waitMembers(t, ctx, l, inv, 5)
	status, err := kprovErr(t, "-f", inv, "status")
	if err != nil {
		t.Errorf("status after the fresh apply: %v\n%s", err, status)
	}
	out, err = kprovErr(t, "-f", inv, "apply", "--auto-approve")
	if err != nil || !strings.Contains(out, "No changes") {
		t.Errorf("a second apply after the reset: %v, want No changes\n%s", err, out)
	}
}
