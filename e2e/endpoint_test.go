//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kprov/kprov/apiproxy"
	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/lab"
)

// endpointProbe asks the API server's /readyz through kprov-apiproxy's code,
// run in this process over every master (as the proxy on every node runs),
// every few hundred milliseconds, and records the answers: the test
// process's view of the node-local endpoint while a master goes away.
type endpointProbe struct {
	url    string
	client *http.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	answers []probeAnswer
}

type probeAnswer struct {
	at  time.Time
	ok  bool
	why string // for a failed ask: the status, or what the connection did
}

// startEndpointProbe starts the in-process proxy on a loopback port and the
// probe through it. It verifies the API server's certificate against the
// cluster CA under the name 127.0.0.1, which the certificate carries for
// the node-local endpoint.
func startEndpointProbe(t *testing.T, ctx context.Context, l *lab.Lab, inv string, masters []string) *endpointProbe {
	t.Helper()
	ca, err := os.ReadFile(filepath.Join(filepath.Dir(inv), ".kprov", l.Name(), "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatal("the state directory's ca.crt holds no certificate")
	}
	var upstreams []string
	for _, name := range masters {
		m, err := l.Machine(name)
		if err != nil {
			t.Fatal(err)
		}
		upstreams = append(upstreams, net.JoinHostPort(m.Address.String(), strconv.Itoa(inventory.DefaultAPIServerPort)))
	}
	proxy := apiproxy.New(apiproxy.Config{Logf: t.Logf})
	proxy.SetUpstreams(upstreams)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithCancel(ctx)
	p := &endpointProbe{
		url:    "https://" + ln.Addr().String() + "/readyz",
		client: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}, DisableKeepAlives: true}},
		cancel: cancel,
		done:   make(chan struct{}),
	}
	go func() { _ = proxy.Serve(pctx, ln) }()
	go func() {
		defer close(p.done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			why := p.ask(pctx)
			p.mu.Lock()
			p.answers = append(p.answers, probeAnswer{time.Now(), why == "", why})
			p.mu.Unlock()
			select {
			case <-pctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(p.stop)
	return p
}

// ask returns "" when /readyz answered 200, else why not: the status (the
// API server answered but is not ready, e.g. while etcd elects a leader)
// or "no answer" (the connection failed or timed out).
func (p *endpointProbe) ask(ctx context.Context) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return err.Error()
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return "no answer"
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.Status
	}
	return ""
}

func (p *endpointProbe) stop() {
	p.cancel()
	<-p.done
}

// answeredSince reports whether the probe had an answer after t.
func (p *endpointProbe) answeredSince(t time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.ContainsFunc(p.answers, func(a probeAnswer) bool { return a.ok && a.at.After(t) })
}

// longestGap is the longest time between two answers from `from` on, and
// the failed asks counted by why they failed.
func (p *endpointProbe) longestGap(from time.Time) (time.Duration, map[string]int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var gap time.Duration
	failed := map[string]int{}
	last := from
	for _, a := range p.answers {
		if a.at.Before(from) {
			continue
		}
		if !a.ok {
			failed[a.why]++
			continue
		}
		gap = max(gap, a.at.Sub(last))
		last = a.at
	}
	return gap, failed
}

// endpointFailover stops (pulls the plug on) master stop, the first master,
// whose address the operator's admin.conf names, and checks the node-local
// endpoint:
//
//   - every node's kubeconfig names the proxy (127.0.0.1:6444), and through
//     it every remaining node reaches a ready API server;
//   - the test process, through the proxy's code over every master, gets
//     answers again within the bound, and the longest gap is logged;
//   - when the node lifecycle controller marks the stopped master NotReady,
//     every other node is still Ready (their kubelets kept reporting through
//     the endpoint), and a new pod is scheduled and runs;
//   - the master comes back Ready after its restart, and apply then has
//     nothing to do.
func endpointFailover(t *testing.T, ctx context.Context, l *lab.Lab, inv, kc string, masters, nodeNames []string) {
	t.Helper()
	stop := masters[0]
	probe := startEndpointProbe(t, ctx, l, inv, masters)
	for deadline := time.Now().Add(time.Minute); !probe.answeredSince(time.Time{}); {
		if time.Now().After(deadline) {
			t.Fatal("no API server answered through the in-process proxy before any master was stopped")
		}
		time.Sleep(250 * time.Millisecond)
	}
	// The test process's kubectl goes through the proxy too, once the
	// operator's admin.conf (pointing at the first master) is of no use.
	viaProxy := kubeconfigVia(t, kc, strings.TrimSuffix(strings.TrimPrefix(probe.url, "https://"), "/readyz"))

	stopped := time.Now()
	if err := l.Stop(ctx, stop, 0); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped %s", stop)
	for deadline := stopped.Add(time.Minute); !probe.answeredSince(stopped); {
		if time.Now().After(deadline) {
			t.Fatalf("the API did not answer through the endpoint within a minute of %s stopping", stop)
		}
		time.Sleep(250 * time.Millisecond)
	}

	for _, n := range nodeNames {
		if n == stop {
			continue
		}
		conf := "/etc/kubernetes/kubelet.conf"
		if slices.Contains(masters, n) {
			conf = "/etc/kubernetes/admin.conf" // a master's kubelet talks to its own API server
		}
		server, err := l.Output(ctx, n, "sed -n 's/^ *server: //p' "+conf)
		if err != nil || strings.TrimSpace(string(server)) != "https://127.0.0.1:6444" {
			t.Errorf("%s: %s names server %q, want the node-local endpoint https://127.0.0.1:6444 (%v)", n, conf, server, err)
		}
		var out []byte
		for deadline := time.Now().Add(time.Minute); ; {
			out, err = l.Output(ctx, n, "kubectl --kubeconfig "+conf+" --request-timeout=5s get --raw /readyz")
			if err == nil && strings.TrimSpace(string(out)) == "ok" {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: the API through its endpoint: %v\n%s", n, err, out)
				break
			}
			time.Sleep(time.Second)
		}
	}

	waitNodeReady(t, ctx, viaProxy, stop, false, 3*time.Minute)
	for name, n := range nodes(t, ctx, viaProxy) {
		if name != stop && !n.ready() {
			t.Errorf("node %s is NotReady after %s stopped: its kubelet lost the API", name, stop)
		}
	}
	kubectlApply(t, ctx, viaProxy, failoverPodManifest)
	for deadline := time.Now().Add(3 * time.Minute); ; {
		out, _ := kubectlTry(t, ctx, viaProxy, "get", "pod", "failover-probe", "-n", "default", "-o", "jsonpath={.status.phase}")
		if string(out) == "Running" {
			break
		}
		if time.Now().After(deadline) {
			desc, _ := kubectlTry(t, ctx, viaProxy, "describe", "pod", "failover-probe", "-n", "default")
			t.Fatalf("a pod created with %s stopped is not Running (%q):\n%s", stop, out, desc)
		}
		time.Sleep(time.Second)
	}
	gap, failed := probe.longestGap(stopped.Add(-time.Second))
	t.Logf("endpoint failover: longest gap in /readyz answers %s (failed asks: %v) with %s stopped", gap.Round(10*time.Millisecond), failed, stop)

	if err := l.Start(ctx, stop, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	waitNodeReady(t, ctx, viaProxy, stop, true, 5*time.Minute)
	kubectl(t, ctx, viaProxy, "delete", "pod", "failover-probe", "-n", "default", "--wait=false")
	if out, err := kprovErr(t, "-f", inv, "apply"); err != nil || !strings.Contains(out, "No changes") {
		t.Errorf("apply after %s came back: %v\n%s", stop, err, out)
	}
}

// failoverPodManifest is a pod created while a master is down.
var failoverPodManifest = `apiVersion: v1
kind: Pod
metadata:
  name: failover-probe
  namespace: default
spec:
  containers:
  - name: podserver
    image: ` + podServerImage + `
    imagePullPolicy: Never
    args: [serve]
`

// kubeconfigVia writes a copy of kubeconfig kc whose server is addr.
func kubeconfigVia(t *testing.T, kc, addr string) string {
	t.Helper()
	b, err := os.ReadFile(kc)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if trimmed := strings.TrimSpace(line); strings.HasPrefix(trimmed, "server: ") {
			line = line[:strings.Index(line, "server: ")] + "server: https://" + addr + "\n"
		}
		out.WriteString(line)
	}
	path := filepath.Join(t.TempDir(), "via-proxy.conf")
	if err := os.WriteFile(path, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
