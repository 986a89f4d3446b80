package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/roles"
	"github.com/kprov/kprov/templates"
)

func init() { commands = append(commands, newRenderCmd) }

// renderMarker marks a directory kprov render wrote, so a later render may replace its contents.
const renderMarker = ".kprov-render"

func newRenderCmd(g *globalOptions) *cobra.Command {
	var outDir string
	var includeSecrets bool
	cmd := &cobra.Command{
		Use:   "render -o DIR",
		Short: "Write every file kprov would push to every host into a directory",
		Long: `render writes every file of every host into DIR/<host>/<path on the host>:
kubeadm configurations, external etcd configuration and units, host
preparation (sysctl, kernel modules, containerd, swap) and the PKI. It
touches no host. It creates the cluster's PKI and join secrets in the
state directory on the first run (see docs/state.md) and reuses them after.

Private keys, the bootstrap token and the certificate key are replaced by
<redacted: ...> placeholders unless --include-secrets is given, so the
output can be reviewed or committed. DIR must be empty, absent, or the
output of an earlier render, whose files are then replaced.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if outDir == "" {
				return usageError("render: -o DIR is required")
			}
			inv, diags, err := g.loadInventory()
			if err != nil {
				return err
			}
			writeDiagnostics(g.stderr, inv, diags)
			if diags.HasErrors() {
				return silentFailure
			}
			set, err := templates.Load(inv.Cluster.TemplatesDir)
			if err != nil {
				return err
			}
			st, changes, err := pki.Ensure(inv.Cluster.StateDir, roles.PKIRequest(inv), time.Now())
			if err != nil {
				return fmt.Errorf("state directory %s: %w", inv.Cluster.StateDir, err)
			}
			for _, c := range changes {
				g.log.Info("pki", "file", c.Path, "change", c.Reason)
			}
			r, err := roles.Render(inv, st, roles.Options{Templates: set})
			if err != nil {
				return err
			}
			if err := prepareOutDir(outDir); err != nil {
				return err
			}
			files, secrets := 0, 0
			for _, h := range r.Hosts {
				for _, f := range h.Files {
					content := f.Redacted
					if includeSecrets {
						content = f.Content
					}
					if err := writeRendered(filepath.Join(outDir, h.Name, filepath.FromSlash(f.Path)), content, f.Mode); err != nil {
						return fmt.Errorf("host %s: %w", h.Name, err)
					}
					files++
					if f.Secret {
						secrets++
					}
				}
			}
			writeRenderSummary(g, r, outDir, files, secrets, includeSecrets)
			return nil
		},
	}
	cmd.Flags().StringVarP(&outDir, "output", "o", "", "`DIR` to write into (required)")
	cmd.Flags().BoolVar(&includeSecrets, "include-secrets", false, "write private keys and join secrets instead of placeholders")
	return cmd
}

func writeRenderSummary(g *globalOptions, r *roles.Rendering, outDir string, files, secrets int, includeSecrets bool) {
	for _, h := range r.Hosts {
		what := make([]string, 0, 2)
		if h.Node != nil {
			what = append(what, "kubeadm "+string(h.Node.Kubeadm))
		}
		if h.Etcd != nil {
			what = append(what, fmt.Sprintf("etcd member, initial-cluster-state %s", h.Etcd.Bootstrap.State))
		}
		fmt.Fprintf(g.stdout, "%-12s %s (%s)\n", h.Name, plural(len(h.Files), "file"), strings.Join(what, ", "))
	}
	fmt.Fprintf(g.stdout, "rendered %s for %s into %s\n", plural(files, "file"), plural(len(r.Hosts), "host"), outDir)
	if includeSecrets {
		fmt.Fprintf(g.stdout, "%s hold secrets (written, mode 0600): protect %s like the state directory\n", plural(secrets, "file"), outDir)
	} else {
		fmt.Fprintf(g.stdout, "%s hold secrets, written with <redacted: ...> placeholders; --include-secrets writes them\n", plural(secrets, "file"))
	}
}

// prepareOutDir makes dir an empty directory (0700) with the render marker,
// emptying it first only when an earlier render wrote it: files from a
// previous render must not linger, and nobody else's files may be removed.
func prepareOutDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("output directory: %w", err)
	case len(entries) > 0:
		if _, err := os.Stat(filepath.Join(dir, renderMarker)); err != nil {
			return fmt.Errorf("output directory %s is not empty and was not written by kprov render: choose another -o", dir)
		}
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("output directory: %w", err)
			}
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("output directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("output directory: %w", err)
	}
	return os.WriteFile(filepath.Join(dir, renderMarker), []byte("written by kprov render; the next render replaces everything here\n"), 0o600)
}

// writeRendered writes a file with exactly mode, whatever the umask; the
// file is created 0600 and widened afterwards, so a key is never readable by others.
func writeRendered(path string, content []byte, mode fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
