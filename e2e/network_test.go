//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kprov/kprov/lab"
)

// podServerImage is the test workload's image (lab/netcheck), which
// kprov imports on every node with the lab's other images (nothing
// pulls: the pods say imagePullPolicy: Never).
var podServerImage = lab.NetcheckImage

// cutWorker cuts worker off the network: it goes NotReady while every
// other node stays Ready, and comes back Ready once its link is restored.
func cutWorker(t *testing.T, ctx context.Context, l *lab.Lab, kc, worker string) {
	t.Helper()
	if err := l.Cut(ctx, worker); err != nil {
		t.Fatal(err)
	}
	waitNodeReady(t, ctx, kc, worker, false, 3*time.Minute)
	for name, n := range nodes(t, ctx, kc) {
		if name != worker && !n.ready() {
			t.Errorf("node %s went NotReady while only %s was cut off", name, worker)
		}
	}
	if err := l.Restore(ctx, worker); err != nil {
		t.Fatal(err)
	}
	waitNodeReady(t, ctx, kc, worker, true, 3*time.Minute)
}

// assertNoPodNetwork checks that hosts running no kubelet (dedicated etcd
// members) got neither the bridge configuration nor pod routes.
func assertNoPodNetwork(t *testing.T, ctx context.Context, l *lab.Lab, hosts []string) {
	t.Helper()
	for _, h := range hosts {
		out, err := l.Output(ctx, h, "ip route show proto 77; ls /etc/cni/net.d 2>/dev/null; systemctl is-active kprov-apiproxy.service; true")
		if err != nil || strings.TrimSpace(string(out)) != "inactive" {
			t.Errorf("%s runs no kubelet, yet has pod routes, a CNI configuration or the API proxy: %v\n%s", h, err, out)
		}
	}
}

// podNetworkChecks checks the pod network of an applied lab whose
// Kubernetes nodes are names, with a test server built here and imported
// on every node:
//
//   - every node runs kprov-pod-routes.service and has a route to every
//     other node's pod /24 through that node's address;
//   - a pod on every node (a DaemonSet tolerating the masters' taint); each
//     reaches every other by its pod IP, across nodes, and the answering
//     pod sees the asking pod's own IP (no masquerade between pods);
//   - a ClusterIP Service, asked by its DNS name from every pod, is
//     answered by the pods on every node;
//   - kubernetes.default.svc resolves through CoreDNS from every pod to
//     the API's ClusterIP.
func podNetworkChecks(t *testing.T, ctx context.Context, l *lab.Lab, kc string, names []string) {
	t.Helper()
	var machines []lab.MachineState
	for _, m := range l.Machines() {
		if slices.Contains(names, m.Name) {
			machines = append(machines, m)
		}
	}

	// 1. Routes: each node has the others' pod subnets through their addresses.
	podCIDRs := map[string]string{} // node -> its /24, from the rendered conflist
	for _, m := range machines {
		out, err := l.Output(ctx, m.Name, `sed -n 's/.*"subnet": "\([^"]*\)".*/\1/p' /etc/cni/net.d/10-kprov-bridge.conflist`)
		if err != nil {
			t.Fatal(err)
		}
		podCIDRs[m.Name] = strings.TrimSpace(string(out))
	}
	for _, m := range machines {
		out, err := l.Output(ctx, m.Name, "systemctl is-active kprov-pod-routes.service; ip route show proto 77")
		if err != nil {
			t.Fatalf("%s: %v\n%s", m.Name, err, out)
		}
		for _, peer := range machines {
			if peer.Name == m.Name {
				continue
			}
			want := podCIDRs[peer.Name] + " via " + peer.Address.String()
			if !strings.Contains(string(out), want) {
				t.Errorf("%s has no route %q:\n%s", m.Name, want, out)
			}
		}
	}

	// 2. The test server on every node.
	kubectlApply(t, ctx, kc, podServerManifest)
	pods := waitPodServers(t, ctx, kc, names)

	// 3. Pod to pod across nodes, by pod IP, without masquerade.
	for _, from := range pods {
		for _, to := range pods {
			if from.node == to.node {
				continue
			}
			out := podExec(t, ctx, kc, from.name, "get", "http://"+to.ip+":8080/")
			want := fmt.Sprintf("pod=%s node=%s remote=%s", to.name, to.node, from.ip)
			if strings.TrimSpace(out) != want {
				t.Errorf("%s (%s) -> %s (%s): got %q, want %q", from.name, from.node, to.name, to.node, out, want)
			}
		}
	}

	// 4. The ClusterIP Service, by its DNS name: every node's pod answers.
	for _, from := range pods {
		out := podExec(t, ctx, kc, from.name, "get", "-n", "48", "http://podserver.default.svc:8080/")
		seen := map[string]bool{}
		for _, m := range regexp.MustCompile(`node=(\S+)`).FindAllStringSubmatch(out, -1) {
			seen[m[1]] = true
		}
		for _, n := range names {
			if !seen[n] {
				t.Errorf("the Service asked 48 times from %s (%s) never reached the pod on %s:\n%s", from.name, from.node, n, out)
			}
		}
	}

	// 5. CoreDNS answers for the API's Service.
	var svc struct {
		Spec struct{ ClusterIP string } `json:"spec"`
	}
	kubectlJSON(t, ctx, kc, &svc, "get", "service", "kubernetes", "-n", "default")
	for _, from := range pods {
		out := podExec(t, ctx, kc, from.name, "resolve", "kubernetes.default.svc")
		if strings.TrimSpace(out) != svc.Spec.ClusterIP {
			t.Errorf("kubernetes.default.svc from %s (%s) resolves to %q, want %s", from.name, from.node, out, svc.Spec.ClusterIP)
		}
	}
}

// waitNodeReady polls the node until its Ready condition is want, within timeout.
func waitNodeReady(t *testing.T, ctx context.Context, kc, node string, want bool, timeout time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		if n, ok := nodes(t, ctx, kc)[node]; ok && n.ready() == want {
			t.Logf("%s Ready=%v after %s", node, want, time.Since(start).Round(time.Second))
			return
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s did not become Ready=%v within %s", node, want, timeout)
		}
		time.Sleep(2 * time.Second)
	}
}

// podServerManifest runs the test server on every node, masters included,
// behind a ClusterIP Service.
var podServerManifest = `apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: podserver
  namespace: default
spec:
  selector:
    matchLabels: {app: podserver}
  template:
    metadata:
      labels: {app: podserver}
    spec:
      tolerations:
      - operator: Exists
      containers:
      - name: podserver
        image: ` + podServerImage + `
        imagePullPolicy: Never
        args: [serve]
        ports:
        - containerPort: 8080
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        - name: NODE_NAME
          valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata:
  name: podserver
  namespace: default
spec:
  selector: {app: podserver}
  ports:
  - port: 8080
    targetPort: 8080
`

// serverPod is one running test server.
type serverPod struct{ name, node, ip string }

// waitPodServers waits until a Ready test server runs on every node and
// returns them in node order.
func waitPodServers(t *testing.T, ctx context.Context, kc string, nodes []string) []serverPod {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var list struct {
			Items []struct {
				Metadata struct{ Name string }     `json:"metadata"`
				Spec     struct{ NodeName string } `json:"spec"`
				Status   struct {
					PodIP      string `json:"podIP"`
					Conditions []struct{ Type, Status string }
				} `json:"status"`
			}
		}
		kubectlJSON(t, ctx, kc, &list, "get", "pods", "-n", "default", "-l", "app=podserver")
		var pods []serverPod
		for _, p := range list.Items {
			ready := slices.ContainsFunc(p.Status.Conditions, func(c struct{ Type, Status string }) bool { return c.Type == "Ready" && c.Status == "True" })
			if ready && p.Status.PodIP != "" {
				pods = append(pods, serverPod{p.Metadata.Name, p.Spec.NodeName, p.Status.PodIP})
			}
		}
		slices.SortFunc(pods, func(a, b serverPod) int { return strings.Compare(a.node, b.node) })
		var on []string
		for _, p := range pods {
			on = append(on, p.node)
		}
		if slices.Equal(on, slices.Sorted(slices.Values(nodes))) {
			return pods
		}
		if time.Now().After(deadline) {
			out, _ := kubectlTry(t, ctx, kc, "get", "pods", "-A", "-o", "wide")
			desc, _ := kubectlTry(t, ctx, kc, "describe", "pods", "-n", "default", "-l", "app=podserver")
			t.Fatalf("test servers Ready on %v, want every node %v:\n%s\n%s", on, nodes, out, desc)
		}
		time.Sleep(time.Second)
	}
}

// podExec runs the netcheck binary in pod with args and returns its output.
func podExec(t *testing.T, ctx context.Context, kc, pod string, args ...string) string {
	t.Helper()
	out, err := kubectlTry(t, ctx, kc, append([]string{"exec", "-n", "default", pod, "--", "/usr/local/bin/netcheck"}, args...)...)
	if err != nil {
		t.Errorf("in %s: podserver %v: %v\n%s", pod, args, err, out)
	}
	return string(out)
}

// kubectlApply applies a manifest given as text.
func kubectlApply(t *testing.T, ctx context.Context, kc, manifest string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "manifest.yaml")
	if err := os.WriteFile(path, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl(t, ctx, kc, "apply", "-f", path)
}

// kubectlTry runs kubectl and returns its output (stderr included on
// failure) and error, for polls and for failures the test reports itself.
func kubectlTry(t *testing.T, ctx context.Context, kubeconfig string, args ...string) ([]byte, error) {
	t.Helper()
	bin := filepath.Join(artifactsDir(t), "kubernetes-v"+lab.DefaultKubernetesVersion, "kubectl")
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", kubeconfig, "--request-timeout=20s"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return append(out, stderr.Bytes()...), err
	}
	return out, nil
}

// TestPodNetworkNone applies a single-master lab with pod_network = "none":
// apply says the node stays NotReady until the user's pod network runs and
// ends successfully without waiting for Ready; the node has neither kprov's
// bridge configuration nor its routes unit, and is NotReady; a second apply
// prints No changes.
func TestPodNetworkNone(t *testing.T) {
	runsBeside(t, false)
	specs, err := lab.TopologyMachines("single")
	if err != nil {
		t.Fatal(err)
	}
	l := UpLab(t, specs)
	inv := withClusterSetting(t, l.InventoryPath(), `pod_network = "none"`)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	out, err := kprovErr(t, "-f", inv, "apply", "--auto-approve")
	if err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if !strings.Contains(out, `pod_network = "none": kprov installs no pod network, and nodes stay NotReady until yours runs`) {
		t.Errorf("apply does not say the nodes stay NotReady:\n%s", out)
	}
	if strings.Contains(out, "waiting for every node to be Ready") {
		t.Errorf("apply waited for Ready without a pod network:\n%s", out)
	}
	m := l.Machines()[0]
	for _, c := range []struct{ what, command string }{
		{"CNI configuration", "ls -A /etc/cni/net.d 2>/dev/null; true"},
		{"routes unit", "ls /etc/systemd/system/kprov-pod-routes.service 2>/dev/null; true"},
		{"routes", "ip route show proto 77"},
	} {
		got, err := l.Output(ctx, m.Name, c.command)
		if err != nil {
			t.Fatal(err)
		}
		if s := strings.TrimSpace(string(got)); s != "" {
			t.Errorf("%s has kprov's %s although pod_network = \"none\":\n%s", m.Name, c.what, s)
		}
	}
	kc := filepath.Join(filepath.Dir(inv), ".kprov", l.Name(), "admin.conf")
	if n, ok := nodes(t, ctx, kc)[m.Name]; !ok || n.ready() {
		t.Errorf("node %s: registered=%v, Ready=%v; want registered and NotReady without a pod network", m.Name, ok, n.ready())
	}
	if out, err := kprovErr(t, "-f", inv, "apply"); err != nil || !strings.Contains(out, "No changes") {
		t.Errorf("second apply: %v\n%s", err, out)
	}
}

// withClusterSetting writes beside inv (sharing its state directory) a copy
// whose cluster block has one more attribute line.
func withClusterSetting(t *testing.T, inv, line string) string {
	t.Helper()
	b, err := os.ReadFile(inv)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^cluster "[^"]*" \{\n`)
	loc := re.FindIndex(b)
	if loc == nil {
		t.Fatalf("no cluster block in %s", inv)
	}
	out := append(append(append([]byte{}, b[:loc[1]]...), []byte("  "+line+"\n")...), b[loc[1]:]...)
	path := filepath.Join(filepath.Dir(inv), "setting.kprov.hcl")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
