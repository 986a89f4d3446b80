package provision

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kprov/kprov/internal/atomicfile"
	"github.com/kprov/kprov/inventory"
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
	dst := filepath.Join(a.opts.StateDir, "admin.conf")
	if old, err := os.ReadFile(dst); err == nil && bytes.Equal(old, buf.Bytes()) {
		return false, nil
	}
	if err := atomicfile.Write(dst, buf.Bytes(), 0o600); err != nil {
		return false, fmt.Errorf("kubeconfig: %w", err)
	}
	return true, nil
}
