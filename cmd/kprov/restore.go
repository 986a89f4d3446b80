package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/kprov/kprov/provision"
	"github.com/kprov/kprov/provision/backup"
	"github.com/kprov/kprov/provision/ssh"
)

func init() { commands = append(commands, newRestoreCmd) }

// restoreOptions are restore's own flags.
type restoreOptions struct {
	identity    string
	autoApprove bool
	parallel    int
	breakLock   bool
	detail      bool
}

func newRestoreCmd(g *globalOptions) *cobra.Command {
	o := &restoreOptions{}
	cmd := &cobra.Command{
		Use:   "restore BACKUP",
		Short: "Rebuild the cluster from a backup onto the inventory's hosts",
		Long: `restore rebuilds the cluster of a kprov backup onto the hosts of the
inventory, which may be new machines with new names and addresses (same
cluster name and etcd mode; any number of etcd members).

Before touching any host it opens and checks the whole backup (with
--identity when it is encrypted) and refuses one of another cluster or of
another etcd mode. The backup's certificate authorities, service-account
keys and client certificates become the inventory's state directory (one
that holds another cluster's CA is refused); per-member certificates and
join secrets are issued anew for the new hosts.

Then, under the cluster lock, it refuses hosts that hold a live cluster
(etcd data or a running etcd, a running or joined kubelet) and lists them
all; it wipes nothing. It shows the plan and asks (--auto-approve for
scripts): the hosts prepared, the snapshot restored with etcdutl as a new
cluster (new member list, new cluster token, revision bumped, old
revisions marked compacted). External etcd: on every member, all started
together, then one leader, every member healthy and a revision above the
snapshot's. Stacked etcd: into the first master's data directory as a
one-member cluster, which kubeadm init starts from. Then apply's own
sequence for Kubernetes (kubeadm init against the restored etcd with the
same CAs, the other masters joining one at a time, the nodes), and the Node
objects of hosts the inventory no longer has are deleted.

Run again after an interruption, it continues: a member this restore
already restored is never restored twice.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.parallel < 1 {
				return usageError("--parallel %d: want 1 or more", o.parallel)
			}
			// Asked here, before the backup is opened, so the hint names
			// restore: a plain apply on fresh hosts would found a new, empty
			// etcd cluster instead of restoring the old one.
			if !o.autoApprove && !term.IsTerminal(int(os.Stdin.Fd())) {
				return usageError("stdin is not a terminal, so nobody can confirm the restore's plans; nothing was changed: run kprov restore %s --auto-approve", args[0])
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return g.restore(ctx, args[0], o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.identity, "identity", "", "the age identity `FILE` to decrypt an encrypted backup with")
	f.BoolVar(&o.autoApprove, "auto-approve", false, "restore and apply without asking (needed when stdin is not a terminal)")
	f.IntVar(&o.parallel, "parallel", ssh.DefaultParallel, "at most `N` hosts worked on at once where quorum allows")
	f.BoolVar(&o.breakLock, "break-lock", false, "remove a cluster lock left by a run that died (not refreshed for 30 s), after a warning")
	f.BoolVar(&o.detail, "detail", false, "list every step of the plans with its reason")
	return cmd
}

// restore checks the backup against the inventory, installs its state
// directory, and runs the pipeline's restore; every refusal about the
// backup comes before any connection to a host.
func (g *globalOptions) restore(ctx context.Context, file string, o *restoreOptions) error {
	start := time.Now()
	inv, err := g.loadValidInventory()
	if err != nil {
		return err
	}
	opts, err := backupOptions(o.identity)
	if err != nil {
		return err
	}
	b, err := backup.OpenFile(file, opts)
	if err != nil {
		return err
	}
	defer b.Close()
	if err := provision.CheckRestoreBackup(inv, &b.Manifest); err != nil {
		return fmt.Errorf("backup %s: %w", file, err)
	}
	installed, err := b.InstallState(inv.Cluster.StateDir)
	if err != nil {
		return err
	}
	if len(installed.Written) > 0 {
		fmt.Fprintf(g.stdout, "State directory %s: %d files from the backup (CAs, keys, client certificates)\n", inv.Cluster.StateDir, len(installed.Written))
	}
	for _, rel := range sortedKeys(installed.Skipped) {
		g.log.Debug("state file not carried over", "file", rel, "why", installed.Skipped[rel])
	}
	c, err := provision.LoadCluster(inv, time.Now(), g.log)
	if err != nil {
		return err
	}
	view := g.applyView(c, o.detail)
	defer view.finish()
	p, pool := g.pipeline(c, o.parallel, view)
	defer pool.Close()
	res, err := p.Restore(ctx, provision.RestoreRequest{Backup: b, AutoApprove: o.autoApprove, BreakLock: o.breakLock, LockOwner: lockOwner(start)})
	view.finish()
	if res.Report != nil {
		view.report(res.Report, res.EtcdTime)
	}
	if res.Apply != nil && res.Apply.Report != nil {
		view.report(res.Apply.Report, res.ApplyTime)
	}
	if err != nil {
		return err
	}
	m := b.Manifest
	var names []string
	for _, ms := range res.Members {
		names = append(names, ms.Name)
	}
	fmt.Fprintf(g.stdout, "Restored cluster %s from %s (snapshot of %s, revision %d, %d keys): etcd members %s serve revision %d\n",
		m.Cluster, file, m.Time.Format(time.RFC3339), m.Revision, m.TotalKeys, strings.Join(names, ", "), res.Revision)
	if len(res.DeletedNodes) > 0 {
		fmt.Fprintf(g.stdout, "Deleted the nodes of hosts not in the inventory: %s\n", strings.Join(res.DeletedNodes, ", "))
	}
	if res.Apply != nil && res.Apply.Kubeconfig != "" {
		fmt.Fprintf(g.stdout, "Admin kubeconfig: %s\n", res.Apply.Kubeconfig)
	}
	fmt.Fprintf(g.stdout, "etcd %s, Kubernetes %s, in all %s\n", res.EtcdTime.Round(time.Second/10), res.ApplyTime.Round(time.Second/10), time.Since(start).Round(time.Second/10))
	return nil
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
