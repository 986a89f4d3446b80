package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kprov/kprov/provision"
	"github.com/kprov/kprov/provision/ssh"
)

func init() { commands = append(commands, newCertsCmd) }

func newCertsCmd(g *globalOptions) *cobra.Command {
	var asJSON bool
	var parallel int
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "List the certificates kprov issued and each host's copy with its expiry, read-only",
		Long: `certs lists every certificate in the state directory (the CAs and the etcd
certificates kprov issued) and reads, over SSH and read-only, every host's
copy of the certificates kprov put there: subject, issuer, serial, SHA-256
fingerprint, not-after and days left, and whether the host's copy (and its
key, compared by checksum) matches the state directory's. On a master it
also lists the control-plane certificates kubeadm keeps under
/etc/kubernetes/pki, with their expiry.

It exits 1 when a reachable host's certificate differs from kprov's, is
missing, expired or unreadable (each named with what to do), and 0
otherwise; an unreachable host is reported but does not stop the listing.

kprov certs renew renews the etcd certificates; see docs/certs.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if parallel < 1 {
				return usageError("--parallel %d: want 1 or more", parallel)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			inv, err := g.loadValidInventory()
			if err != nil {
				return err
			}
			c, err := provision.LoadClusterReadOnly(inv)
			if err != nil {
				return err
			}
			p, pool := g.pipeline(c, parallel, nil)
			defer pool.Close()
			rep, err := p.Certs(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				if err := writeJSON(g.stdout, rep); err != nil {
					return err
				}
			} else {
				writeCerts(g, rep)
			}
			if rep.Failed {
				return &exitCodeError{code: exitError, err: fmt.Errorf("certificates need attention:\n  %s", strings.Join(rep.Problems, "\n  "))}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the listing as JSON (state, hosts, problems, failed)")
	cmd.Flags().IntVar(&parallel, "parallel", ssh.DefaultParallel, "read at most `N` hosts at once")
	cmd.AddCommand(newCertsRenewCmd(g))
	return cmd
}

// writeCerts prints the state directory's certificates, then one row per
// certificate file on each host.
func writeCerts(g *globalOptions, rep *provision.CertsReport) {
	fmt.Fprintln(g.stdout, "State directory:")
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FILE\tKIND\tSUBJECT\tISSUER\tSERIAL\tNOT AFTER\tDAYS LEFT")
	for _, s := range rep.State {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", s.Path, s.Kind, s.Subject, s.Issuer, shortSerial(s.Serial), s.NotAfter.Format(time.DateOnly), s.DaysLeft)
	}
	tw.Flush()
	fmt.Fprintln(g.stdout, "\nHosts:")
	tw = tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tFILE\tSTATE\tSUBJECT\tISSUER\tSERIAL\tFINGERPRINT\tNOT AFTER\tDAYS LEFT")
	for _, h := range rep.Hosts {
		if !h.Reachable {
			// The error is in the problems below: kept out of the table's columns.
			fmt.Fprintf(tw, "%s\t-\tunreachable\t-\t-\t-\t-\t-\t-\n", h.Host)
			continue
		}
		for _, c := range h.Certs {
			info := c.Host
			if info == nil {
				info = c.Kprov
			}
			if info == nil {
				fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t-\t-\t-\n", h.Host, c.Path, c.State)
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Host, c.Path, c.State, info.Subject, info.Issuer,
				shortSerial(info.Serial), info.SHA256[:16], info.NotAfter.Format(time.DateOnly), strconv.Itoa(info.DaysLeft))
		}
	}
	tw.Flush()
	if len(rep.Problems) > 0 {
		fmt.Fprintln(g.stdout)
		for _, p := range rep.Problems {
			fmt.Fprintln(g.stdout, "problem: "+p)
		}
	}
}

// shortSerial keeps a table narrow: kprov's serials are 127 random bits.
func shortSerial(s string) string {
	if len(s) > 16 {
		return s[:16] + "…"
	}
	return s
}

// renewOptions are kprov certs renew's flags.
type renewOptions struct {
	all            bool
	expiringWithin string
	autoApprove    bool
	parallel       int
	breakLock      bool
	detail         bool
	etcdOnly       bool
}

func newCertsRenewCmd(g *globalOptions) *cobra.Command {
	o := &renewOptions{}
	cmd := &cobra.Command{
		Use:   "renew (--all | --expiring-within DURATION) [--etcd-only]",
		Short: "Renew the etcd and control-plane certificates and roll them out one member and one master at a time",
		Long: `renew issues new etcd member (server, peer) and client certificates
(kprov's healthcheck client, the API server's apiserver-etcd-client) from
the etcd CA in the state directory (the CA itself is never rotated), either
all of them (--all) or those expiring within DURATION (--expiring-within
30d; units d, h, m). Under the cluster lock it gathers facts and runs the
preflight; it refuses to start when the hosts differ from the inventory
(run kprov apply first). The plan shows the client certificates written in
the prepare stage and each etcd member's certificates written in a
rolling restart, one member at a time, the leader last (leadership moved
away first), each followed by a wait for the member to catch up and every
voter to be healthy. Each member certificate is checked against the etcd
CA and the member's names before the plan is shown. Once confirmed (or
--auto-approve) the new certificates go into the state directory, the old
ones kept under pki-history/, and the plan is carried out.

Then, unless --etcd-only, kubeadm's certificates on the masters (all
masters with --all, else those holding one that expires within DURATION),
one master at a time, the first master last: kubeadm certs renew all,
then with stacked etcd its member restarted and every member healthy
again, then kube-apiserver restarted and answering, then the controller
manager and the scheduler restarted; at the end the admin kubeconfig in
the state directory is fetched again. Kubelets renew their own client
certificates. With nothing to renew it prints "No changes".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.parallel < 1 {
				return usageError("--parallel %d: want 1 or more", o.parallel)
			}
			var within time.Duration
			switch {
			case o.all && o.expiringWithin != "":
				return usageError("--all and --expiring-within: give one")
			case !o.all && o.expiringWithin == "":
				return usageError("say which certificates: --all, or --expiring-within DURATION (e.g. 30d)")
			case o.expiringWithin != "":
				d, err := parseDays(o.expiringWithin)
				if err != nil {
					return usageError("--expiring-within %q: %v", o.expiringWithin, err)
				}
				within = d
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return g.renewCerts(ctx, o, within)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.all, "all", false, "renew every etcd certificate kprov issued, and kubeadm's on every master")
	f.BoolVar(&o.etcdOnly, "etcd-only", false, "renew the etcd certificates only, not kubeadm's on the masters")
	f.StringVar(&o.expiringWithin, "expiring-within", "", "renew those that expire within `DURATION` (e.g. 30d, 720h)")
	f.BoolVar(&o.autoApprove, "auto-approve", false, "renew without asking (needed when stdin is not a terminal and there is something to renew)")
	f.IntVar(&o.parallel, "parallel", ssh.DefaultParallel, "at most `N` hosts worked on at once where quorum allows")
	f.BoolVar(&o.breakLock, "break-lock", false, "remove a cluster lock left by a run that died (not refreshed for 30 s), after a warning")
	f.BoolVar(&o.detail, "detail", false, "list every step of the plan with its reason")
	return cmd
}

// parseDays reads a duration that may be given in days ("30d") as well as
// anything time.ParseDuration takes.
func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days < 0 {
			return 0, fmt.Errorf("want a whole number of days, like 30d")
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("want a duration like 30d or 720h")
	}
	return d, nil
}

// renewCerts runs the pipeline's renewal and prints what it did.
func (g *globalOptions) renewCerts(ctx context.Context, o *renewOptions, within time.Duration) error {
	start := time.Now()
	inv, err := g.loadValidInventory()
	if err != nil {
		return err
	}
	// Read-only: LoadCluster would reissue a certificate close to expiry
	// itself, without the renewal's plan and rolling restart.
	c, err := provision.LoadClusterReadOnly(inv)
	if err != nil {
		return err
	}
	view := g.applyView(c, o.detail)
	defer view.finish()
	p, pool := g.pipeline(c, o.parallel, view)
	defer pool.Close()
	res, err := p.RenewCerts(ctx, provision.RenewRequest{
		ApplyRequest: provision.ApplyRequest{AutoApprove: o.autoApprove, BreakLock: o.breakLock, LockOwner: lockOwner(start)},
		All:          o.all, ExpiringWithin: within, ControlPlane: !o.etcdOnly,
	})
	view.finish()
	if res.Report != nil {
		view.report(res.Report, time.Since(start))
	}
	if err != nil {
		return err
	}
	if len(res.Renewed) == 0 && len(res.Masters) == 0 {
		fmt.Fprintln(g.stdout, "No changes. No certificate to renew.")
		return nil
	}
	for _, ch := range res.Changes {
		fmt.Fprintf(g.stdout, "renewed %s%s\n", ch.Path, strings.TrimPrefix(ch.Reason, "renewed"))
	}
	for _, m := range res.Masters {
		fmt.Fprintf(g.stdout, "renewed kubeadm's certificates on %s (its control plane restarted)\n", m)
	}
	return nil
}
