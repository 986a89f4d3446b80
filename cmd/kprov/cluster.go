package main

import (
	"os"
	"path/filepath"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision"
	"github.com/kprov/kprov/provision/ssh"
)

// loadCluster reads the inventory (printing its diagnostics to stderr), the
// templates, and creates or reuses the PKI in the state directory.
func (g *globalOptions) loadCluster() (*provision.Cluster, error) {
	inv, err := g.loadValidInventory()
	if err != nil {
		return nil, err
	}
	return provision.LoadCluster(inv, time.Now(), g.log)
}

// loadValidInventory reads the inventory and prints its diagnostics to
// stderr; an invalid one is a silent failure, the diagnostics having said why.
func (g *globalOptions) loadValidInventory() (*inventory.Inventory, error) {
	inv, diags, err := g.loadInventory()
	if err != nil {
		return nil, err
	}
	writeDiagnostics(g.stderr, inv, diags)
	if diags.HasErrors() {
		return nil, silentFailure
	}
	return inv, nil
}

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

// pipeline is the sequence of gather, preflight, plan, lock and apply over
// one pool of connections; close the pool when done.
func (g *globalOptions) pipeline(c *provision.Cluster, parallel int, view provision.View) (*provision.Pipeline, *ssh.Pool) {
	pool := g.sshPool()
	return &provision.Pipeline{
		Cluster:  c,
		Conn:     &provision.PoolConnector{Pool: pool, Inventory: c.Inventory},
		Parallel: parallel,
		View:     view,
		Logger:   g.log,
	}, pool
}
