//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/lab"
	"github.com/kprov/kprov/provision"
	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
)

// TestApplyExternalEtcd applies the ha-external lab (3 etcd, 2 masters, 1
// infra, 1 compute) with the binaries pushed from the artifact cache:
//
//   - the first apply is killed (SIGKILL) right after etcd-2 was added as a
//     learner; the next apply is refused by the lock the dead one left (as
//     live while its heartbeat is fresh, even with --break-lock; as stale
//     once it is not), and with --break-lock it converges without adding
//     etcd-2 again;
//   - etcd's own client then sees three voting members over TLS, healthy,
//     with one leader, and a write reads back linearizably;
//   - the same run goes on to the control plane: every node Ready, the
//     masters' static pods running, the API answering through
//     STATE_DIR/admin.conf from this process, infra-1 with the infra label
//     and taint, master-2 joined after master-1's init had finished;
//   - a second apply has nothing to do (No changes);
//   - the pod network works across nodes (podNetworkChecks), the etcd hosts
//     have none, and the node-local API endpoint survives the loss of
//     master-1 (endpointFailover);
//   - a changed host key is refused, and a stopped etcd machine makes apply
//     refuse in preflight, naming it.
func TestApplyExternalEtcd(t *testing.T) {
	runsBeside(t, true)
	specs, err := lab.TopologyMachines("ha-external")
	if err != nil {
		t.Fatal(err)
	}
	l := UpLab(t, specs)
	inv := l.InventoryPath()
	if b, err := os.ReadFile(inv); err != nil || !strings.Contains(string(b), "artifacts {") {
		t.Fatalf("the lab's inventory has no artifacts block (is the artifact cache warm? kprov lab artifacts): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()

	// 1. Killed halfway: right after etcd-2 joined as a learner.
	killedAfterLearner(t, ctx, l, inv)

	// 2. The dead apply's lock stops the next one, naming it: first as a
	// live lock (refreshed moments ago, which --break-lock will not
	// remove), then, once its heartbeat is older than the stale limit, as
	// left by an apply that stopped. Each try only takes the lock (it comes
	// first), so polling is cheap; it ends on what apply says, not a sleep.
	out, err := kprovErr(t, "-f", inv, "apply", "--auto-approve", "--break-lock")
	if err == nil || !strings.Contains(out, "another apply holds the cluster lock") || !strings.Contains(out, "still running") {
		t.Fatalf("apply --break-lock over a just-killed apply's lock: %v\n%s", err, out)
	}
	deadline := time.Now().Add(3 * provision.DefaultLockStaleAfter)
	for {
		out, err = kprovErr(t, "-f", inv, "apply", "--auto-approve")
		if err == nil {
			t.Fatalf("apply ran over a dead apply's lock:\n%s", out)
		}
		if strings.Contains(out, "has stopped") && strings.Contains(out, "--break-lock") {
			break
		}
		if !strings.Contains(out, "still running") || time.Now().After(deadline) {
			t.Fatalf("apply over a dead apply's lock: %v\n%s", err, out)
		}
	}

	// 3. Resume: converges etcd, never adds etcd-2 again, stops at kubeadm init.
	start := time.Now()
	out, err = kprovErr(t, "-f", inv, "apply", "--auto-approve", "--break-lock")
	t.Logf("resumed apply took %s", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("resumed apply: %v\n%s", err, out)
	}
	if strings.Contains(out, "etcd learner added member=etcd-2") {
		t.Errorf("the resumed apply added etcd-2 again:\n%s", out)
	}
	if !strings.Contains(out, "broke the cluster lock") {
		t.Errorf("breaking the lock was not warned about:\n%s", out)
	}
	ids := checkEtcd(t, ctx, l, inv)
	status := statusHealthy(t, ctx, inv, 3*time.Minute)
	if !strings.Contains(status, "etcd: 3 voting, quorum 2, 3 healthy") || strings.Count(status, " voter ") != 3 {
		t.Errorf("kprov status:\n%s", status)
	}

	kc := adminKubeconfig(t, l, inv)
	assertNodesReady(t, ctx, kc, []string{"master-1", "master-2", "infra-1", "compute-1"})
	assertControlPlanePods(t, ctx, kc, []string{"master-1", "master-2"}, false)
	assertJoinedInTurn(t, ctx, l, []string{"master-1", "master-2"})
	infra := nodes(t, ctx, kc)["infra-1"]
	if _, ok := infra.Metadata.Labels["node-role.kubernetes.io/infra"]; !ok {
		t.Errorf("infra-1 lacks the infra label: %v", infra.Metadata.Labels)
	}
	if !slices.ContainsFunc(infra.Spec.Taints, func(tt struct{ Key, Value, Effect string }) bool {
		return tt.Key == "node-role.kubernetes.io/infra" && tt.Effect == "NoSchedule"
	}) {
		t.Errorf("infra-1 lacks the infra taint: %v", infra.Spec.Taints)
	}

	// 4. Again: nothing to do.
	out, err = kprovErr(t, "-f", inv, "apply", "--auto-approve")
	if err != nil || !strings.Contains(out, "No changes") {
		t.Errorf("apply on the converged cluster: %v\n%s", err, out)
	}
	if again := checkEtcd(t, ctx, l, inv); !slices.Equal(again, ids) {
		t.Errorf("member IDs changed from %x to %x", ids, again)
	}

	// 5. The pod network (dedicated etcd hosts get none) and the
	// node-local API endpoint losing the first master.
	k8sNodes := []string{"master-1", "master-2", "infra-1", "compute-1"}
	podNetworkChecks(t, ctx, l, kc, k8sNodes)
	assertNoPodNetwork(t, ctx, l, []string{"etcd-1", "etcd-2", "etcd-3"})
	endpointFailover(t, ctx, l, inv, kc, []string{"master-1", "master-2"}, k8sNodes)

	// 6. A changed host key is refused, never retried or skipped.
	bad := badHostKeyInventory(t, l, inv, "etcd-1", "etcd-2")
	out, err = kprovErr(t, "-f", bad, "apply", "--auto-approve")
	if err == nil || !strings.Contains(out, "host key mismatch") || !strings.Contains(out, "etcd-1") {
		t.Errorf("apply with etcd-1's key changed: %v\n%s", err, out)
	}

	// 7. A stopped etcd machine: preflight refuses, naming it.
	if err := l.Stop(ctx, "etcd-3", 0); err != nil {
		t.Fatal(err)
	}
	out, err = kprovErr(t, "-f", inv, "apply", "--auto-approve")
	if err == nil || !regexp.MustCompile(`etcd-3: reachable: .*`).MatchString(out) || !strings.Contains(out, "preflight found") {
		t.Errorf("apply with etcd-3 stopped: %v\n%s", err, out)
	}
}

// killedAfterLearner starts an apply and kills it with SIGKILL as soon as
// etcd lists etcd-2 (as a learner, before its promotion).
func killedAfterLearner(t *testing.T, ctx context.Context, l *lab.Lab, inv string) {
	t.Helper()
	run := startApplyUntil(t, ctx, "[etcd] adding member 2/3 (etcd-2) ...", "-f", inv, "apply", "--auto-approve")
	waitMembers(t, ctx, l, inv, 2)
	if err := run.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	run.wait()
	t.Log("killed apply with etcd-2 listed")
}

// assertApplied checks the run converged: exit 0, having run kubeadm on
// master-1 with a configuration the host's kubeadm validated first, and
// waited for every node to be Ready.
func assertApplied(t *testing.T, out string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("apply: %v, want it to converge\n%s", err, out)
	}
	if strings.Contains(out, "kubeadm init on master-1 ...") && !strings.Contains(out, "kubeadm configuration valid host=master-1 config=/etc/kprov/kubeadm-init.yaml") {
		t.Errorf("kubeadm init ran without the host's kubeadm validating its configuration:\n%s", out)
	}
}

// etcdClient talks to the lab's etcd with kprov's healthcheck client
// certificate from the state directory, directly over the lab bridge.
func etcdClient(t *testing.T, ctx context.Context, l *lab.Lab, inv string) *clientv3.Client {
	t.Helper()
	return etcdClientState(t, ctx, l, filepath.Join(filepath.Dir(inv), ".kprov", l.Name()))
}

// etcdClientState is etcdClient with the state directory named: a restored
// cluster keeps its old name, not the lab's.
func etcdClientState(t *testing.T, ctx context.Context, l *lab.Lab, stateDir string) *clientv3.Client {
	t.Helper()
	st, err := pki.Load(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := provision.EtcdClientTLS(st)
	if err != nil {
		t.Fatal(err)
	}
	var eps []string
	for _, m := range l.Machines() {
		if slices.Contains(m.Roles, inventory.RoleEtcd) {
			eps = append(eps, plan.EtcdClientURL(m.Address.String()))
		}
	}
	if len(eps) == 0 { // stacked etcd: a member on every master
		for _, m := range l.Machines() {
			if slices.Contains(m.Roles, inventory.RoleMaster) {
				eps = append(eps, plan.EtcdClientURL(m.Address.String()))
			}
		}
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop(), Context: ctx})
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// checkEtcd asserts three healthy voting members named after their hosts,
// one leader and one cluster ID, and a write that reads back; it returns
// the member IDs in order.
func checkEtcd(t *testing.T, ctx context.Context, l *lab.Lab, inv string) []uint64 {
	t.Helper()
	cli := etcdClient(t, ctx, l, inv)
	defer cli.Close()
	list, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var ids []uint64
	leaders := map[uint64]bool{}
	for _, m := range list.Members {
		names = append(names, m.Name)
		ids = append(ids, m.ID)
		if m.IsLearner {
			t.Errorf("%s (%x) is still a learner", m.Name, m.ID)
		}
		if len(m.ClientURLs) == 0 {
			t.Errorf("member %x (%s) has never started: no client URL", m.ID, m.PeerURLs)
			continue
		}
		st, err := cli.Status(ctx, m.ClientURLs[0])
		if err != nil {
			t.Errorf("%s: status: %v", m.Name, err)
			continue
		}
		if st.Header.ClusterId != list.Header.ClusterId {
			t.Errorf("%s answers for cluster %x, not %x", m.Name, st.Header.ClusterId, list.Header.ClusterId)
		}
		leaders[st.Leader] = true
	}
	slices.Sort(names)
	slices.Sort(ids)
	if strings.Join(names, ",") != "etcd-1,etcd-2,etcd-3" || len(leaders) != 1 {
		t.Errorf("members %v, leaders %v", names, leaders)
	}
	key, val := "/kprov-e2e/"+t.Name(), time.Now().String()
	if _, err := cli.Put(ctx, key, val); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, key) // linearizable by default
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != val {
		t.Errorf("read back %v: %v", resp, err)
	}
	return ids
}

// badHostKeyInventory writes, beside the lab's inventory (so it shares the
// state directory), a copy whose known_hosts gives host `victim` the key of
// host `other`.
func badHostKeyInventory(t *testing.T, l *lab.Lab, inv, victim, other string) string {
	t.Helper()
	v, err := l.Machine(victim)
	if err != nil {
		t.Fatal(err)
	}
	o, err := l.Machine(other)
	if err != nil {
		t.Fatal(err)
	}
	kh, err := os.ReadFile(l.KnownHostsPath())
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, line := range strings.Split(strings.TrimSpace(string(kh)), "\n") {
		if strings.HasPrefix(line, v.Address.String()+" ") {
			line = v.Address.String() + " " + strings.TrimSpace(o.HostKey)
		}
		lines = append(lines, line)
	}
	dir := filepath.Dir(inv)
	badKH := filepath.Join(dir, "known_hosts.bad")
	if err := os.WriteFile(badKH, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(inv)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(src), fmt.Sprintf("%q", l.KnownHostsPath()), fmt.Sprintf("%q", badKH), 1)
	path := filepath.Join(dir, "badkey.kprov.hcl")
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
