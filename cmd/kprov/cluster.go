package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision"
	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/provision/ssh"
	"github.com/kprov/kprov/roles"
	"github.com/kprov/kprov/templates"
)

// cluster is what every command past validate starts from: the valid
// inventory, its templates and its PKI from the state directory.
type cluster struct {
	inv   *inventory.Inventory
	tmpl  *templates.Set
	state *pki.State
}

// loadCluster reads the inventory (printing its diagnostics to stderr), the
// templates, and creates or reuses the PKI in the state directory.
func (g *globalOptions) loadCluster() (*cluster, error) {
	inv, diags, err := g.loadInventory()
	if err != nil {
		return nil, err
	}
	writeDiagnostics(g.stderr, inv, diags)
	if diags.HasErrors() {
		return nil, silentFailure
	}
	set, err := templates.Load(inv.Cluster.TemplatesDir)
	if err != nil {
		return nil, err
	}
	st, changes, err := pki.Ensure(inv.Cluster.StateDir, roles.PKIRequest(inv), time.Now())
	if err != nil {
		return nil, fmt.Errorf("state directory %s: %w", inv.Cluster.StateDir, err)
	}
	for _, c := range changes {
		g.log.Info("pki", "file", c.Path, "change", c.Reason)
	}
	return &cluster{inv: inv, tmpl: set, state: st}, nil
}

// kubeconfigPath is where kprov keeps the cluster's admin kubeconfig.
func (c *cluster) kubeconfigPath() string { return filepath.Join(c.inv.Cluster.StateDir, "admin.conf") }

// sshPool opens the transport with the user's agent and ~/.ssh/config.
func (g *globalOptions) sshPool() *ssh.Pool {
	home, _ := os.UserHomeDir()
	opts := ssh.Options{Logger: g.log, Passphrase: ssh.TerminalPassphrase, AgentSocket: os.Getenv("SSH_AUTH_SOCK"), Home: home}
	if home != "" {
		if _, err := os.Stat(filepath.Join(home, ".ssh", "config")); err == nil {
			opts.SSHConfigFile = filepath.Join(home, ".ssh", "config")
		}
	}
	return ssh.NewPool(opts)
}

// gatherFacts connects to every host read-only and reads what the plan needs:
// the checksums of every file kprov manages, services, and etcd membership.
func (g *globalOptions) gatherFacts(ctx context.Context, c *cluster, conn provision.Connector, parallel int) (*plan.Facts, error) {
	final, err := roles.Render(c.inv, c.state, roles.Options{Templates: c.tmpl, EtcdBootstrap: roles.FormedEtcdBootstrap(c.inv.Topology.EtcdMembers)})
	if err != nil {
		return nil, err
	}
	files := map[string][]string{}
	for _, h := range final.Hosts {
		for _, f := range h.Files {
			files[h.Name] = append(files[h.Name], f.Path)
		}
	}
	// Installed artifacts are compared by checksum like any other file.
	for _, h := range c.inv.Hosts {
		for _, a := range roles.ArtifactsFor(c.inv, h) {
			files[h.Name] = append(files[h.Name], plan.BinDir+"/"+a.Name)
		}
	}
	opts := provision.GatherOptions{Parallel: parallel, Files: files, Logger: g.log}
	if c.inv.Topology.EtcdMode == inventory.EtcdExternal {
		if opts.EtcdTLS, err = provision.EtcdClientTLS(c.state); err != nil {
			return nil, err
		}
	}
	facts, err := provision.Gather(ctx, c.inv, conn, opts)
	if err != nil {
		return nil, err
	}
	for _, name := range c.inv.Topology.Masters {
		if hf := facts.Hosts[name]; hf == nil || !hf.Reachable || !hf.ControlPlane {
			continue
		}
		exec, err := conn.Connect(ctx, c.inv.Host(name))
		if err == nil {
			facts.Nodes, err = provision.GatherNodes(ctx, exec)
		}
		if err == nil {
			break
		}
		// Without the node list the plan sets every node's labels and taints
		// again, which is harmless; say why instead of failing the plan.
		g.log.Warn("cannot list nodes; labels and taints will be set again", "master", name, "err", err)
	}
	if fi, err := os.Stat(c.kubeconfigPath()); err == nil && fi.Size() > 0 {
		facts.KubeconfigFetched = true
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return facts, nil
}
