//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/lab"
	"github.com/kprov/kprov/provision"
)

// TestApplyStackedToReady applies the ha-stacked lab (3 masters with
// stacked etcd, 1 compute) from fresh machines to a working control plane:
//
//   - an inventory whose image archives lack CoreDNS is refused by the
//     preflight, naming the image on every node, before anything changes;
//   - the first apply is killed (SIGKILL) while master-2's kubeadm join
//     runs; the join finishes on the host, and the next apply (once the dead
//     one's lock is stale) waits for it and never runs a second join there;
//   - then every node is Ready, every control-plane static pod runs, the API
//     answers through STATE_DIR/admin.conf from this process, the masters
//     joined one at a time after init (their files' times on the hosts say
//     so), and the three stacked etcd members are healthy voters;
//   - kprov status shows the nodes Ready and the members, and a second
//     apply, with no terminal and no --auto-approve, prints No changes;
//   - the pod network works across nodes (podNetworkChecks); the node-local
//     API endpoint survives the loss of master-1 (endpointFailover); a
//     worker cut off the network goes NotReady alone and comes back
//     (cutWorker);
//   - a day later (the state directory says the bootstrap token is 25 hours
//     old, and the cluster has deleted it, as kubeadm does after 24 hours)
//     a fifth machine added to the inventory joins: apply creates the token
//     again first, and the new node is Ready;
//   - compute-2 taken out of the inventory again is drained (a Deployment
//     with a PodDisruptionBudget keeps running elsewhere) and its Node
//     deleted, and the next apply prints No changes.
//
// The lab has a fifth machine, compute-2, that the inventory leaves out
// until the last step.
func TestApplyStackedToReady(t *testing.T) {
	runsAlone(t)
	specs, err := lab.TopologyMachines("ha-stacked")
	if err != nil {
		t.Fatal(err)
	}
	specs = append(specs, lab.MachineSpec{Name: "compute-2", Roles: []inventory.Role{inventory.RoleCompute}},
		lab.MachineSpec{Name: "master-4", Roles: []inventory.Role{inventory.RoleMaster}})
	l := UpLab(t, specs)
	// master-4 waits, idle, until step 9 swaps it in for master-3.
	full := inventoryWithoutHosts(t, l.InventoryPath(), "master-4")
	inv := inventoryWithoutHosts(t, l.InventoryPath(), "master-4", "compute-2")
	var four []string
	for _, m := range l.Machines() {
		if m.Name != "compute-2" && m.Name != "master-4" {
			four = append(four, m.Name)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()

	// 1. A bundle without one image: the preflight names it, nothing changes.
	short := inventoryWithoutImage(t, inv, "coredns")
	out, err := kprovErr(t, "-f", short, "apply", "--auto-approve")
	if exitCode(err) != 1 || !strings.Contains(out, "preflight found") || !strings.Contains(out, "registry.k8s.io/coredns/coredns:v1.14.6") {
		t.Fatalf("apply with CoreDNS missing from the images: %v\n%s", err, out)
	}
	for _, m := range four {
		if !regexp.MustCompile(`(?m)^.*` + regexp.QuoteMeta(m) + `:.*coredns`).MatchString(out) {
			t.Errorf("the preflight does not name the missing image on %s:\n%s", m, out)
		}
	}
	assertUntouched(t, ctx, l)

	// 2. Killed while master-2 joins: kubeadm goes on there without kprov.
	run := startApplyUntil(t, ctx, "[control-plane] joining master-2 to the control plane ...", "-f", inv, "apply", "--auto-approve")
	waitKubeadmRunning(t, ctx, l, "master-2")
	if err := run.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first, _ := run.wait()
	t.Log("killed apply while master-2's kubeadm join ran")

	// 3. Resume: waits for that join instead of starting another, converges.
	start := time.Now()
	out, err = applyOverStaleLock(t, inv)
	t.Logf("resumed apply took %s", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("resumed apply: %v\n%s\n(first run:\n%s)", err, out, first)
	}
	if strings.Contains(out, "kubeadm configuration valid host=master-2") {
		t.Errorf("the resumed apply ran kubeadm on master-2 again:\n%s", out)
	}
	if n := kubeadmRuns(t, ctx, l, "master-2"); n != 1 {
		t.Errorf("kubeadm ran %d times on master-2, want once", n)
	}

	// 4. A working cluster, seen from this process through the admin kubeconfig.
	kc := adminKubeconfig(t, l, inv)
	assertNodesReady(t, ctx, kc, four)
	assertControlPlanePods(t, ctx, kc, []string{"master-1", "master-2", "master-3"}, true)
	assertJoinedInTurn(t, ctx, l, []string{"master-1", "master-2", "master-3"})
	status := statusHealthy(t, ctx, inv, 3*time.Minute)
	for _, m := range four {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(m) + ` .*node Ready`).MatchString(status) {
			t.Errorf("kprov status does not show %s Ready:\n%s", m, status)
		}
	}
	if !strings.Contains(status, "etcd: 3 voting, quorum 2, 3 healthy") {
		t.Errorf("kprov status does not show three healthy stacked members:\n%s", status)
	}

	// Kubelets renew their own client certificates.
	for _, m := range four {
		if out, err := l.Output(ctx, m, "grep -x 'rotateCertificates: true' /var/lib/kubelet/config.yaml"); err != nil {
			t.Errorf("%s's kubelet does not rotate its client certificate: %v\n%s", m, err, out)
		}
	}

	// 5. Converged: nothing to do, nothing asked.
	out, err = kprovErr(t, "-f", inv, "apply")
	if err != nil || !strings.Contains(out, "No changes") {
		t.Errorf("apply on the converged cluster: %v\n%s", err, out)
	}

	// 6. The pod network and the node-local API endpoint, on the same cluster.
	podNetworkChecks(t, ctx, l, kc, four)
	endpointFailover(t, ctx, l, inv, kc, []string{"master-1", "master-2", "master-3"}, four)
	cutWorker(t, ctx, l, kc, "compute-1")

	// 7. A day later, compute-2 joins with a token created anew.
	token := ageBootstrapToken(t, filepath.Join(filepath.Dir(inv), ".kprov", l.Name()), 25*time.Hour)
	id, _, _ := strings.Cut(token, ".")
	kubectl(t, ctx, kc, "-n", "kube-system", "delete", "secret", "bootstrap-token-"+id)
	out, err = kprovErr(t, "-f", full, "apply", "--auto-approve")
	if err != nil {
		t.Fatalf("apply adding compute-2 a day later: %v\n%s", err, out)
	}
	if !strings.Contains(out, "[control-plane] renewing the join secrets on master-1 ...") {
		t.Errorf("the join secrets were not renewed before compute-2 joined:\n%s", out)
	}
	assertNodesReady(t, ctx, kc, append(four, "compute-2"))

	// 8. compute-2 leaves the inventory again: drained (a Deployment with a
	// PodDisruptionBudget keeps its pods available), its Node deleted.
	kubectlApply(t, ctx, kc, draineeManifest)
	kubectl(t, ctx, kc, "-n", "default", "rollout", "status", "deployment/drainee", "--timeout=3m")
	out, err = kprovErr(t, "-f", inv, "apply", "--auto-approve")
	if err != nil || !regexp.MustCompile(`(?m)^\[nodes\] removing node compute-2: done`).MatchString(out) {
		t.Fatalf("apply without compute-2: %v\n%s", err, out)
	}
	if got, err := kubectlTry(t, ctx, kc, "get", "node", "compute-2"); err == nil || !strings.Contains(string(got), "NotFound") {
		t.Errorf("compute-2's Node after its removal: %v\n%s", err, got)
	}
	kubectl(t, ctx, kc, "-n", "default", "rollout", "status", "deployment/drainee", "--timeout=3m")
	if where := string(kubectl(t, ctx, kc, "-n", "default", "get", "pods", "-l", "app=drainee", "-o", "jsonpath={.items[*].spec.nodeName}")); strings.Contains(where, "compute-2") || strings.TrimSpace(where) == "" {
		t.Errorf("the drained Deployment's pods run on %q", where)
	}
	out, err = kprovErr(t, "-f", inv, "apply", "--auto-approve")
	if err != nil || !strings.Contains(out, "No changes") {
		t.Errorf("apply after compute-2's removal: %v\n%s", err, out)
	}

	// 9. master-3 swapped for master-4, both alive: master-4 joins first,
	// then master-3 is drained, its stacked etcd member removed through
	// master-1 (leadership moved away if it leads), its Node deleted.
	swap := inventoryWithoutHosts(t, l.InventoryPath(), "compute-2", "master-3")
	if plan, err := kprovErr(t, "-f", swap, "plan"); err != nil || !strings.Contains(plan, "removing master master-3 and its etcd member") {
		t.Fatalf("plan with master-3 swapped for master-4: %v\n%s", err, plan)
	}
	out, err = kprovErr(t, "-f", swap, "apply", "--auto-approve")
	if err != nil {
		t.Fatalf("apply with master-3 swapped for master-4: %v\n%s", err, out)
	}
	joined, removed := strings.Index(out, "joining master-4 to the control plane"), strings.Index(out, "[nodes] removing master master-3 and its etcd member: done")
	if joined < 0 || removed < 0 || joined > removed {
		t.Errorf("want master-4 joined before master-3 was removed:\n%s", out)
	}
	afterSwap := []string{"master-1", "master-2", "master-4", "compute-1"}
	assertNodesReady(t, ctx, kc, afterSwap)
	if got, err := kubectlTry(t, ctx, kc, "get", "node", "master-3"); err == nil || !strings.Contains(string(got), "NotFound") {
		t.Errorf("master-3's Node after its removal: %v\n%s", err, got)
	}
	status = statusHealthy(t, ctx, swap, 3*time.Minute)
	if !strings.Contains(status, "etcd: 3 voting, quorum 2, 3 healthy") || regexp.MustCompile(`(?m)^master-3\s`).MatchString(status) {
		t.Errorf("kprov status after the swap: want three healthy members, none on master-3:\n%s", status)
	}
	out, err = kprovErr(t, "-f", swap, "apply", "--auto-approve")
	if err != nil || !strings.Contains(out, "No changes") {
		t.Errorf("apply after the swap: %v\n%s", err, out)
	}
}

// draineeManifest is a Deployment of two test servers whose
// PodDisruptionBudget lets one go at a time.
var draineeManifest = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: drainee
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels: {app: drainee}
  template:
    metadata:
      labels: {app: drainee}
    spec:
      containers:
      - name: server
        image: ` + podServerImage + `
        imagePullPolicy: Never
        args: [serve]
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 2
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: drainee
  namespace: default
spec:
  minAvailable: 1
  selector:
    matchLabels: {app: drainee}
`

// inventoryWithoutHosts writes beside inv (sharing its state directory) a
// copy without the named hosts' blocks.
func inventoryWithoutHosts(t *testing.T, inv string, hosts ...string) string {
	t.Helper()
	b, err := os.ReadFile(inv)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for _, host := range hosts {
		start := slices.Index(lines, "host "+strconv.Quote(host)+" {")
		if start < 0 {
			t.Fatalf("no host %s in %s", host, inv)
		}
		end := start + slices.Index(lines[start:], "}")
		lines = append(slices.Clone(lines[:start]), lines[end+1:]...)
	}
	path := filepath.Join(filepath.Dir(inv), "without-"+strings.Join(hosts, "-")+".kprov.hcl")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// ageBootstrapToken makes the state directory say the bootstrap token was
// created age ago, as if that much time had passed, and returns the token.
func ageBootstrapToken(t *testing.T, stateDir string, age time.Duration) string {
	t.Helper()
	path := filepath.Join(stateDir, "secrets.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	token, _ := s["bootstrapToken"].(string)
	if token == "" {
		t.Fatalf("%s holds no bootstrap token", path)
	}
	s["bootstrapTokenCreated"] = time.Now().Add(-age).UTC().Format(time.RFC3339)
	if b, err = json.Marshal(s); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return token
}

// inventoryWithoutImage writes beside inv (sharing its state directory) a
// copy whose images list lacks the archives whose line mentions name.
func inventoryWithoutImage(t *testing.T, inv, name string) string {
	t.Helper()
	b, err := os.ReadFile(inv)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	dropped := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, name) && strings.Contains(line, "sha256") {
			dropped++
			continue
		}
		kept = append(kept, line)
	}
	if dropped == 0 {
		t.Fatalf("the lab's inventory lists no image archive for %s:\n%s", name, b)
	}
	path := filepath.Join(filepath.Dir(inv), "without-"+name+".kprov.hcl")
	if err := os.WriteFile(path, []byte(strings.Join(kept, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitKubeadmRunning waits until kprov's kubeadm unit runs on machine (a
// oneshot service is "activating" while its command runs).
func waitKubeadmRunning(t *testing.T, ctx context.Context, l *lab.Lab, machine string) {
	t.Helper()
	for {
		out, _ := l.Output(ctx, machine, "systemctl show -p ActiveState --value kprov-kubeadm.service")
		if strings.TrimSpace(string(out)) == "activating" {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("%s: kubeadm never ran", machine)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// kubeadmRuns counts the times kprov's kubeadm unit started on machine.
func kubeadmRuns(t *testing.T, ctx context.Context, l *lab.Lab, machine string) int {
	t.Helper()
	out, err := l.Output(ctx, machine, "journalctl --no-pager -o cat _PID=1 | grep -c '^Starting kprov-kubeadm.service' || true")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("%s: journal count %q: %v", machine, out, err)
	}
	return n
}

// applyOverStaleLock runs apply until a killed apply's lock counts as stale
// (each try only takes the lock and is refused while the dead one's
// heartbeat is fresh), then once more with --break-lock, and returns that run.
func applyOverStaleLock(t *testing.T, inv string) (string, error) {
	t.Helper()
	waitStaleLock(t, inv)
	return kprovErr(t, "-f", inv, "apply", "--auto-approve", "--break-lock")
}

// waitStaleLock runs apply until it refuses the cluster lock of a killed
// apply as stale (a holder that has stopped), so --break-lock may break it.
func waitStaleLock(t *testing.T, inv string) {
	t.Helper()
	deadline := time.Now().Add(3 * provision.DefaultLockStaleAfter)
	for {
		out, err := kprovErr(t, "-f", inv, "apply", "--auto-approve")
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
}

// adminKubeconfig is the admin kubeconfig apply fetched into the state directory.
func adminKubeconfig(t *testing.T, l *lab.Lab, inv string) string {
	t.Helper()
	kc := filepath.Join(filepath.Dir(inv), ".kprov", l.Name(), "admin.conf")
	fi, err := os.Stat(kc)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", kc, fi.Mode().Perm())
	}
	return kc
}

// kubectl runs the cached kubectl here, against the lab's API server, and
// returns its output.
func kubectl(t *testing.T, ctx context.Context, kubeconfig string, args ...string) []byte {
	t.Helper()
	bin := filepath.Join(artifactsDir(t), "kubernetes-v"+lab.DefaultKubernetesVersion, "kubectl")
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", kubeconfig, "--request-timeout=20s"}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("kubectl %v: %v\n%s", args, err, stderr)
	}
	return out
}

// kubectlJSON runs kubectl with -o json and decodes its output into v.
func kubectlJSON(t *testing.T, ctx context.Context, kubeconfig string, v any, args ...string) {
	t.Helper()
	out := kubectl(t, ctx, kubeconfig, append([]string{"-o", "json"}, args...)...)
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("kubectl %v: %v", args, err)
	}
}

// k8sNode is the part of a Node the tests read.
type k8sNode struct {
	Metadata struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Taints []struct{ Key, Value, Effect string } `json:"taints"`
	} `json:"spec"`
	Status struct {
		Conditions []struct{ Type, Status string } `json:"conditions"`
	} `json:"status"`
}

func (n k8sNode) ready() bool {
	for _, c := range n.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

// nodes lists the cluster's nodes by name.
func nodes(t *testing.T, ctx context.Context, kubeconfig string) map[string]k8sNode {
	t.Helper()
	var list struct{ Items []k8sNode }
	kubectlJSON(t, ctx, kubeconfig, &list, "get", "nodes")
	out := map[string]k8sNode{}
	for _, n := range list.Items {
		out[n.Metadata.Name] = n
	}
	return out
}

// assertNodesReady checks that exactly the wanted nodes exist, all Ready:
// apply waited for that before it ended.
func assertNodesReady(t *testing.T, ctx context.Context, kubeconfig string, want []string) {
	t.Helper()
	got := nodes(t, ctx, kubeconfig)
	var have []string
	for name, n := range got {
		have = append(have, name)
		if !n.ready() {
			t.Errorf("node %s is not Ready: %+v", name, n.Status.Conditions)
		}
	}
	slices.Sort(have)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(have, want) {
		t.Errorf("nodes %v, want %v", have, want)
	}
}

// assertControlPlanePods checks every master's static pods run (etcd too
// when stacked).
func assertControlPlanePods(t *testing.T, ctx context.Context, kubeconfig string, masters []string, stacked bool) {
	t.Helper()
	var list struct {
		Items []struct {
			Metadata struct{ Name string }  `json:"metadata"`
			Status   struct{ Phase string } `json:"status"`
		}
	}
	kubectlJSON(t, ctx, kubeconfig, &list, "-n", "kube-system", "get", "pods")
	phase := map[string]string{}
	for _, p := range list.Items {
		phase[p.Metadata.Name] = p.Status.Phase
	}
	components := []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"}
	if stacked {
		components = append(components, "etcd")
	}
	for _, m := range masters {
		for _, c := range components {
			if p := phase[c+"-"+m]; p != "Running" {
				t.Errorf("static pod %s-%s is %q, want Running (pods: %v)", c, m, p, phase)
			}
		}
	}
}

// assertJoinedInTurn checks from the files kubeadm wrote on each master
// that init ran first and each further master joined only after the one
// before it had finished: the first file a master's kubeadm writes (its
// API server certificate) is younger than the last the previous master's
// wrote (its manifests and kubelet.conf).
func assertJoinedInTurn(t *testing.T, ctx context.Context, l *lab.Lab, masters []string) {
	t.Helper()
	type span struct{ first, last float64 }
	spans := map[string]span{}
	for _, m := range masters {
		out, err := l.Output(ctx, m, "stat -c %.9Y /etc/kubernetes/pki/apiserver.crt; stat -c %.9Y /etc/kubernetes/manifests/*.yaml /etc/kubernetes/kubelet.conf | sort -n | tail -1")
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(out))
		if len(f) != 2 {
			t.Fatalf("%s: %q", m, out)
		}
		first, _ := strconv.ParseFloat(f[0], 64)
		last, _ := strconv.ParseFloat(f[1], 64)
		spans[m] = span{first, last}
	}
	for i := 1; i < len(masters); i++ {
		prev, cur := spans[masters[i-1]], spans[masters[i]]
		if cur.first <= prev.last {
			t.Errorf("%s's kubeadm started (%.3f) before %s's had finished (%.3f)", masters[i], cur.first, masters[i-1], prev.last)
		}
	}
	t.Logf("kubeadm on the masters, in turn: %v", fmt.Sprint(spans))
}
