package provision

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/kprov/kprov/internal/atomicfile"
	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/provision/ssh"
)

// configArg returns the value of --config in a kubeadm command line.
func configArg(cmd string) string {
	f := strings.Fields(cmd)
	for i, a := range f {
		if a == "--config" && i+1 < len(f) {
			return f[i+1]
		}
		if v, ok := strings.CutPrefix(a, "--config="); ok {
			return v
		}
	}
	return ""
}

// kubeadm runs kubeadm init or join unless the host already went through
// it: the API server manifest exists after init or a control-plane join,
// kubelet.conf after any join. A join that took effect is never repeated.
// The host's own kubeadm validates the configuration first (RELIABILITY 13).
func (a *applier) kubeadm(ctx context.Context, ex ssh.Executor, s plan.Step) (bool, error) {
	h := a.inv.Host(s.Host)
	marker := plan.KubeletConfPath
	if s.Op == plan.OpKubeadmInit || (h != nil && h.Has(inventory.RoleMaster)) {
		marker = plan.APIServerManifestPath
	}
	// An earlier apply's kubeadm may still be at work (that apply was
	// killed or lost its connection): it finishes first, and its result
	// decides, so one host never runs two.
	told := false
	if err := a.etcd.poll(ctx, "kubeadm started by an earlier apply on "+s.Host+" to finish", func(ctx context.Context) error {
		res, err := a.run(ctx, ex, scriptKubeadmRunning, a.opts.CommandTimeout)
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(res.Stdout)) == "running" {
			if !told {
				a.log.Info("waiting for the kubeadm an earlier apply started", "host", s.Host)
				told = true
			}
			return errors.New("still running")
		}
		return nil
	}); err != nil {
		return false, err
	}
	res, err := a.run(ctx, ex, scriptExists(marker), a.opts.CommandTimeout)
	if err != nil {
		return false, err
	}
	if strings.TrimSpace(string(res.Stdout)) == "present" {
		a.log.Info("kubeadm already ran", "host", s.Host, "found", marker)
		return false, nil
	}
	cfg := configArg(s.Command)
	if cfg == "" {
		return false, fmt.Errorf("%q has no --config to validate", s.Command)
	}
	if _, err := a.run(ctx, ex, scriptKubeadmValidate(cfg), a.opts.CommandTimeout); err != nil {
		return false, fmt.Errorf("kubeadm config validate: %w", err)
	}
	a.log.Info("kubeadm configuration valid", "host", s.Host, "config", cfg)
	if _, err := a.run(ctx, ex, scriptKubeadm(s.Command), a.opts.KubeadmTimeout); err != nil {
		return false, err
	}
	return true, nil
}

// waitAPIServer polls https://ADDRESS:6443/livez through a tunnel from the
// host itself, trusting only the cluster CA, until it answers 200.
func (a *applier) waitAPIServer(ctx context.Context, ex ssh.Executor, s plan.Step) error {
	h := a.inv.Host(s.Host)
	if h == nil {
		return fmt.Errorf("host %s is not in the inventory", s.Host)
	}
	if a.opts.ClusterCA == nil {
		return fmt.Errorf("no cluster CA to verify the API server with")
	}
	addr := net.JoinHostPort(h.Address, strconv.Itoa(inventory.DefaultAPIServerPort))
	tr := &http.Transport{
		DialContext:     func(ctx context.Context, _, _ string) (net.Conn, error) { return ex.Dial(ctx, "tcp", addr) },
		TLSClientConfig: &tls.Config{RootCAs: a.opts.ClusterCA, ServerName: h.Address, MinVersion: tls.VersionTLS12},
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: DefaultEtcdTimeout}
	return a.etcd.poll(ctx, "API server on "+s.Host+" live", func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/livez", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /livez: %s: %s", resp.Status, bytes.TrimSpace(body))
		}
		return nil
	})
}

// kubectlHost is where label-taint-node runs kubectl with the admin kubeconfig.
func (a *applier) kubectlHost() string {
	if a.opts.KubectlHost != "" {
		return a.opts.KubectlHost
	}
	if len(a.inv.Topology.Masters) > 0 {
		return a.inv.Topology.Masters[0]
	}
	return ""
}

// labelNode sets the node's labels and taints through the API with the
// admin kubeconfig on a master; --overwrite makes both idempotent.
func (a *applier) labelNode(ctx context.Context, s plan.Step) (bool, error) {
	via := a.kubectlHost()
	ex, err := a.connect(ctx, via)
	if err != nil {
		return false, fmt.Errorf("kubectl on %s: %w", via, err)
	}
	changed := false
	if len(s.Labels) > 0 {
		res, err := a.run(ctx, ex, scriptLabelNode(s.Host, s.Labels), a.opts.CommandTimeout)
		if err != nil {
			return false, fmt.Errorf("label: %w", err)
		}
		changed = changed || !strings.Contains(string(res.Stdout), "not labeled")
	}
	if len(s.Taints) > 0 {
		if _, err := a.run(ctx, ex, scriptTaintNode(s.Host, s.Taints), a.opts.CommandTimeout); err != nil {
			return false, fmt.Errorf("taint: %w", err)
		}
		changed = true
	}
	return changed, nil
}

// waitNodeReady polls the node's Ready condition through kubectl on a
// master until it is True: a joined node whose kubelet, runtime or network
// is broken stops the run here, naming the node, instead of being reported
// as done.
func (a *applier) waitNodeReady(ctx context.Context, s plan.Step) error {
	via := a.kubectlHost()
	ex, err := a.connect(ctx, via)
	if err != nil {
		return fmt.Errorf("kubectl on %s: %w", via, err)
	}
	return a.etcd.poll(ctx, "node "+s.Host+" Ready", func(ctx context.Context) error {
		res, err := a.run(ctx, ex, scriptNodeReady(s.Host), a.opts.CommandTimeout)
		if err != nil {
			return err
		}
		if got := strings.TrimSpace(string(res.Stdout)); got != "True" {
			if got == "" {
				got = "not reported yet"
			}
			return fmt.Errorf("its Ready condition is %s", got)
		}
		return nil
	})
}

// drainNode drains the step's Node with kubectl on the step's Host (a
// master). When the drain fails, the error names the pods that held it
// and why (a PodDisruptionBudget that allows no eviction, a pod without a
// controller), from kubectl's own lines.
func (a *applier) drainNode(ctx context.Context, ex ssh.Executor, s plan.Step) (bool, error) {
	res, err := a.run(ctx, ex, scriptDrainNode(s.Node), drainTimeout+time.Minute)
	out := string(res.Stdout)
	if err != nil {
		if why := drainBlockers(out); why != "" {
			return false, fmt.Errorf("drain %s: %s; let those pods go (scale them elsewhere, relax the budget, or delete a pod that has no controller), then run kprov apply again: %w", s.Node, why, err)
		}
		return false, fmt.Errorf("drain %s: %w", s.Node, err)
	}
	return !strings.Contains(out, nodeGone), nil
}

var (
	// kubectl drain's line for a pod whose eviction was refused, e.g.
	// error when evicting pods/"web-1" -n "default" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.
	evictRefused = regexp.MustCompile(`error when evicting pods/"([^"]+)" -n "([^"]+)"[^:]*: (.*)`)
	// and its refusal of pods it would not delete without --force, e.g.
	// error: unable to drain node "c-1" due to error: cannot delete Pods that declare no controller (use --force to override): default/bare, continuing command...
	noController = regexp.MustCompile(`cannot delete Pods that declare no controller[^:]*: ([^,\n]+(?:, [^,\n]+)*?)(?:, continuing command\.\.\.)?$`)
)

// drainBlockers reads from kubectl drain's output the pods that kept the
// node from draining, each once, with kubectl's reason.
func drainBlockers(out string) string {
	seen := map[string]bool{}
	var blockers []string
	for _, line := range strings.Split(out, "\n") {
		if m := evictRefused.FindStringSubmatch(line); m != nil {
			pod := m[2] + "/" + m[1]
			if !seen[pod] {
				seen[pod] = true
				blockers = append(blockers, pod+" ("+strings.TrimSuffix(strings.TrimSpace(m[3]), ".")+")")
			}
		}
		if m := noController.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			for _, pod := range strings.Split(m[1], ", ") {
				if !seen[pod] {
					seen[pod] = true
					blockers = append(blockers, pod+" (no controller: deleting it would lose it)")
				}
			}
		}
	}
	if len(blockers) == 0 {
		return ""
	}
	return "pods that could not be evicted: " + strings.Join(blockers, ", ")
}

// fetchKubeconfig copies the admin kubeconfig into the state directory,
// 0600 (it holds the cluster-admin key), through a temporary name.
func (a *applier) fetchKubeconfig(ctx context.Context, ex ssh.Executor, s plan.Step) (bool, error) {
	if a.opts.StateDir == "" {
		return false, fmt.Errorf("no state directory to keep the kubeconfig in")
	}
	var buf bytes.Buffer
	if err := ex.Download(ctx, s.Path, &cappedWriter{w: &buf, max: maxKubeconfig, what: s.Path}); err != nil {
		return false, err
	}
	kubeconfig := operatorKubeconfig(a.inv, s.Host, buf.Bytes())
	dst := filepath.Join(a.opts.StateDir, "admin.conf")
	if old, err := os.ReadFile(dst); err == nil && bytes.Equal(old, kubeconfig) {
		return false, nil
	}
	if err := atomicfile.Write(dst, kubeconfig, 0o600); err != nil {
		return false, fmt.Errorf("kubeconfig: %w", err)
	}
	return true, nil
}

// operatorKubeconfig is the admin kubeconfig as the operator's machine
// uses it. With the node-local API endpoint, the server kubeadm wrote
// (127.0.0.1:PORT) is the proxy on each node, which the operator's machine
// does not run: it points at the master it was fetched from instead. (The
// API server's certificate names 127.0.0.1, so an operator who runs
// kprov-apiproxy locally can use --server https://127.0.0.1:PORT.)
func operatorKubeconfig(inv *inventory.Inventory, master string, kubeconfig []byte) []byte {
	if inv == nil || inv.Cluster.APIEndpoint != inventory.APIEndpointNodeLocal {
		return kubeconfig
	}
	h := inv.Host(master)
	if h == nil {
		return kubeconfig
	}
	direct := net.JoinHostPort(h.Address, strconv.Itoa(inventory.DefaultAPIServerPort))
	return bytes.ReplaceAll(kubeconfig, []byte("server: https://"+inv.Cluster.ControlPlaneEndpoint+"\n"), []byte("server: https://"+direct+"\n"))
}

// createBootstrapToken creates the step's bootstrap token on the cluster
// with the master's kubeadm (the usages, groups, description and ttl of the
// one kubeadm init creates), then records in the state directory that the
// token's lifetime starts now. The token is in the command line, whose log
// lines and errors are redacted; kubeadm prints it on stdout, which the
// script discards.
func (a *applier) createBootstrapToken(ctx context.Context, ex ssh.Executor, s plan.Step) (bool, error) {
	token := pki.Secret(s.Content)
	id := pki.Secrets{BootstrapToken: token}.BootstrapTokenID()
	if id == "" {
		return false, errors.New("the step carries no bootstrap token")
	}
	if a.opts.StateDir == "" {
		return false, errors.New("no state directory to record the bootstrap token in")
	}
	if _, err := a.run(ctx, ex, scriptCreateBootstrapToken(id, token.Reveal(), pki.BootstrapTokenTTL), a.opts.CommandTimeout, token.Reveal()); err != nil {
		return false, err
	}
	return true, a.recordSecret("bootstrap token", func(dir string, at time.Time) (bool, error) {
		return pki.RecordBootstrapTokenCreated(dir, token, at)
	})
}

// uploadCerts uploads the control-plane certificates again, encrypted with
// the certificate key in the init configuration at s.Path, which the
// prepare stage wrote with the state directory's key; then it records in the
// state directory that the upload happened now (kubeadm deletes the
// certificates pki.CertificateKeyTTL later).
//
// The key reaches kubeadm through the configuration, never the command
// line: kubeadm refuses --certificate-key beside --config, and without the
// configuration it uploads the certificates of a stacked etcd, so a master
// joining a cluster with external etcd would fail for want of the external
// etcd client certificate (kubernetes/kubeadm#1886). The host's kubeadm
// validates the configuration first (RELIABILITY 13).
func (a *applier) uploadCerts(ctx context.Context, ex ssh.Executor, s plan.Step) (bool, error) {
	key := pki.Secret(s.Content)
	if key.IsZero() || s.Path == "" {
		return false, errors.New("the step carries no certificate key or no init configuration")
	}
	if a.opts.StateDir == "" {
		return false, errors.New("no state directory to record the certificate upload in")
	}
	if _, err := a.run(ctx, ex, scriptKubeadmValidate(s.Path), a.opts.CommandTimeout, key.Reveal()); err != nil {
		return false, fmt.Errorf("kubeadm config validate: %w", err)
	}
	if _, err := a.run(ctx, ex, scriptUploadCerts(s.Path), a.opts.CommandTimeout, key.Reveal()); err != nil {
		return false, err
	}
	return true, a.recordSecret("certificate key", func(dir string, at time.Time) (bool, error) {
		return pki.RecordCertificatesUploaded(dir, key, at)
	})
}

// recordSecret records in the state directory that a join secret reached
// the cluster. A state directory that holds another value by now (a later
// plan renewed it again) keeps that one pending, for the next apply to give
// the cluster; this run's joins use the value the cluster has just got.
func (a *applier) recordSecret(what string, record func(dir string, at time.Time) (bool, error)) error {
	recorded, err := record(a.opts.StateDir, a.now())
	if err != nil {
		return fmt.Errorf("record the renewed %s in the state directory: %w", what, err)
	}
	if !recorded {
		a.log.Warn("the state directory holds another "+what+" by now; it stays pending for the next apply", "state_dir", a.opts.StateDir)
	}
	return nil
}
