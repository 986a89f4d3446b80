//go:build e2e

// Package e2e holds kprov's end-to-end tests: real tools and lab machines.
// Run with: go test -tags e2e ./e2e
package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/log"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/lab"
	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/roles"
	"github.com/kprov/kprov/templates"
)

// inventories are rendered and checked with the kubeadm of their own Kubernetes version.
var inventories = []string{
	"../examples/single.kprov.hcl",
	"../examples/ha-stacked.kprov.hcl",
	"../examples/ha-external.kprov.hcl",
	"../examples/openshift.kprov.hcl",
	"../roles/testdata/inventories/masters-only.kprov.hcl",
	"../roles/testdata/inventories/external-etcd.kprov.hcl",
	"../roles/testdata/inventories/templates-override.kprov.hcl",
	"../roles/testdata/inventories/v1beta3.kprov.hcl", // Kubernetes 1.30: kubeadm 1.30 and v1beta3
}

// kubeadm returns the real kubeadm of version, built from the module proxy
// on first use and cached with lab.BuildKubeadm in artifactsDir, the cache
// TestArtifacts and `kprov lab artifacts` use. It skips the test, saying why,
// only when the go command is missing or reports that the module proxy or
// the network failed (lab.ErrToolchain).
func kubeadm(t *testing.T, version string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	start := time.Now()
	art, err := lab.BuildKubeadm(ctx, artifactsDir(t), version, log.New(t.Output()))
	if errors.Is(err, lab.ErrToolchain) {
		t.Skipf("SKIP: cannot build kubeadm v%s to validate rendered configurations: %v", version, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubeadm v%s: %s (%s)", version, art.Path, time.Since(start).Round(time.Millisecond))
	return art.Path
}

// TestRenderedKubeadmConfigsValidate renders every inventory and runs
// `kubeadm config validate` (strict: unknown fields fail) on every node's
// configuration with the real secrets, then `kubeadm init --dry-run` on
// the first master's, with kprov's PKI in the dry-run directory, and checks
// kubeadm uses kprov's CAs and derives the same discovery hash.
func TestRenderedKubeadmConfigsValidate(t *testing.T) {
	for _, path := range inventories {
		name := strings.TrimSuffix(filepath.Base(path), ".kprov.hcl")
		t.Run(name, func(t *testing.T) {
			inv, diags := inventory.Load(path, inventory.Options{})
			if diags.HasErrors() {
				t.Fatal(diags.Error())
			}
			bin := kubeadm(t, inv.Cluster.KubernetesVersion)
			st, _, err := pki.Ensure(filepath.Join(t.TempDir(), "state"), roles.PKIRequest(inv), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			set, err := templates.Load(inv.Cluster.TemplatesDir)
			if err != nil {
				t.Fatal(err)
			}
			r, err := roles.Render(inv, st, roles.Options{Templates: set})
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			for _, h := range r.Hosts {
				if h.Node == nil {
					continue
				}
				cfg := filepath.Join(dir, h.Name+".yaml")
				if err := os.WriteFile(cfg, fileContent(t, h, h.Node.KubeadmConfig), 0o600); err != nil {
					t.Fatal(err)
				}
				if out, err := run(t, nil, bin, "config", "validate", "--config", cfg); err != nil {
					t.Errorf("%s: kubeadm config validate %s: %v\n%s", h.Name, h.Node.KubeadmConfig, err, out)
				}
				if h.Node.Kubeadm == roles.KubeadmInit {
					dryRunInit(t, bin, st, h, cfg)
				}
			}
		})
	}
}

// dryRunInit runs kubeadm init --dry-run with the master's PKI files as
// they would be on the host. Preflight errors are ignored: this machine has
// no kubelet or container runtime, and the test is about the configuration.
func dryRunInit(t *testing.T, bin string, st *pki.State, h *roles.HostFiles, cfg string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Logf("SKIP kubeadm init --dry-run for %s: it needs root (only config validate ran)", h.Name)
		return
	}
	certs := t.TempDir()
	for _, f := range h.Files {
		rel, ok := strings.CutPrefix(f.Path, pki.RemotePKIDir+"/")
		if !ok {
			continue
		}
		p := filepath.Join(certs, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.Content, f.Mode); err != nil {
			t.Fatal(err)
		}
	}
	// The node's own kubeadm patches (its kubelet's cgroup driver), as they
	// would be on the host, in a directory the configuration is pointed at.
	patches := t.TempDir()
	for _, f := range h.Files {
		if name, ok := strings.CutPrefix(f.Path, plan.KubeadmPatchesDir+"/"); ok {
			if err := os.WriteFile(filepath.Join(patches, name), f.Content, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	config, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(config, []byte(plan.KubeadmPatchesDir)) {
		t.Errorf("%s: the init configuration does not point kubeadm at %s", h.Name, plan.KubeadmPatchesDir)
	}
	local := filepath.Join(t.TempDir(), "init.yaml")
	if err := os.WriteFile(local, bytes.ReplaceAll(config, []byte(plan.KubeadmPatchesDir), []byte(patches)), 0o600); err != nil {
		t.Fatal(err)
	}
	// KUBEADM_INIT_DRYRUN_DIR keeps kubeadm's dry-run output out of /etc/kubernetes.
	out, err := run(t, []string{"KUBEADM_INIT_DRYRUN_DIR=" + certs}, bin,
		"init", "--dry-run", "--config", local, "--ignore-preflight-errors=all")
	if err != nil {
		t.Fatalf("%s: kubeadm init --dry-run: %v\n%s", h.Name, err, tail(out, 40))
	}
	for _, want := range []string{
		`Using the existing "ca" certificate and key`,
		`Using the existing "front-proxy-ca" certificate and key`,
		`Using the existing "sa" key`,
		st.DiscoveryHash(),
	} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("%s: kubeadm init --dry-run output lacks %q:\n%s", h.Name, want, tail(out, 40))
		}
	}
}

func run(t *testing.T, env []string, bin string, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	return cmd.CombinedOutput()
}

func fileContent(t *testing.T, h *roles.HostFiles, path string) []byte {
	t.Helper()
	for _, f := range h.Files {
		if f.Path == path {
			return f.Content
		}
	}
	t.Fatalf("%s: no file %s", h.Name, path)
	return nil
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
