package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/provision/ssh"
	"github.com/kprov/kprov/roles"
)

func init() { commands = append(commands, newApplyCmd) }

// applyOptions are apply's own flags.
type applyOptions struct {
	autoApprove bool
	parallel    int
	breakLock   bool
	planFile    string
}

func newApplyCmd(g *globalOptions) *cobra.Command {
	o := &applyOptions{}
	cmd := &cobra.Command{
		Use:   "apply [PLANFILE]",
		Short: "Bring the hosts to the inventory: preflight, plan, confirm, apply",
		Long: `apply gathers facts (read-only), runs the preflight checks on every host and
reports all problems together, plans, shows the plan and asks for
confirmation (--auto-approve for scripts), takes the cluster lock on the first
master, and carries the plan out stage by stage. Every step checks the live
state first, so running apply again after an interruption converges, and on a
converged cluster it prints "No changes".

With PLANFILE (from kprov plan --out) it applies that plan exactly, and
refuses when the hosts or the inventory changed since it was made.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.parallel < 1 {
				return usageError("--parallel %d: want 1 or more", o.parallel)
			}
			if len(args) == 1 {
				o.planFile = args[0]
			}
			// Known before connecting anywhere: without a terminal nobody
			// can confirm, so refuse now rather than after gathering facts.
			if !o.autoApprove && !term.IsTerminal(int(os.Stdin.Fd())) {
				return usageError("stdin is not a terminal: review the plan with kprov plan, then run apply with --auto-approve")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return g.apply(ctx, o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.autoApprove, "auto-approve", false, "apply without asking (needed when stdin is not a terminal)")
	f.IntVar(&o.parallel, "parallel", ssh.DefaultParallel, "hosts worked on at once where quorum allows")
	f.BoolVar(&o.breakLock, "break-lock", false, "remove a stale cluster lock left by an apply that died (after a warning)")
	return cmd
}

func (g *globalOptions) apply(ctx context.Context, o *applyOptions) error {
	start := time.Now()
	c, err := g.loadCluster()
	if err != nil {
		return err
	}
	var saved *savedPlan
	if o.planFile != "" {
		if saved, err = readSavedPlan(o.planFile); err != nil {
			return err
		}
	}
	pool := g.sshPool()
	defer pool.Close()
	conn := &provision.PoolConnector{Pool: pool, Inventory: c.inv}
	facts, err := g.gatherFacts(ctx, c, conn, o.parallel)
	if err != nil {
		return err
	}

	problems, err := provision.Preflight(ctx, c.inv, facts, conn, provision.PreflightOptions{
		Parallel: o.parallel, Binaries: hostBinaries(c.inv), Logger: g.log})
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return &provision.PreflightError{Problems: problems}
	}

	pl, err := roles.Plan(c.inv, facts, c.state, roles.PlanOptions{Parallel: o.parallel, Templates: c.tmpl})
	if err != nil {
		return err
	}
	if saved != nil {
		if err := checkSavedPlan(saved, facts, pl); err != nil {
			return err
		}
	}
	if pl.Empty() {
		fmt.Fprintln(g.stdout, "No changes. The hosts match the inventory.")
		return nil
	}
	if err := pl.WriteText(g.stdout, pl.HostChanges(hostNames(c), hostRoles(c), facts)); err != nil {
		return err
	}
	if !o.autoApprove {
		if err := confirm(g.stdout); err != nil {
			return err
		}
	}

	lockHost := c.inv.Topology.Masters[0]
	ex, err := conn.Connect(ctx, c.inv.Host(lockHost))
	if err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	lock, broken, err := provision.AcquireLock(ctx, ex, lockOwner(start), o.breakLock)
	if broken != "" {
		g.log.Warn("broke the cluster lock: if that apply is still running, the two now race", "host", lockHost, "was", broken)
	}
	if err != nil {
		return err
	}
	defer func() {
		// The run's context may be cancelled (Ctrl-C): release with a fresh one.
		rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := lock.Release(rctx); err != nil {
			g.log.Warn("cluster lock not released; the next apply needs --break-lock", "host", lockHost, "err", err)
		}
	}()

	roots := x509.NewCertPool()
	roots.AddCert(c.state.CA.Cert)
	opts := provision.ApplyOptions{
		Inventory: c.inv, ClusterCA: roots, StateDir: c.inv.Cluster.StateDir, KubectlHost: kubectlHost(pl, c.inv),
		Secrets: []string{c.state.Secrets.BootstrapToken.Reveal(), c.state.Secrets.CertificateKey.Reveal()},
		OnStage: g.progress(c.inv), Logger: g.log,
	}
	if c.inv.Topology.EtcdMode == inventory.EtcdExternal {
		if opts.EtcdTLS, err = provision.EtcdClientTLS(c.state); err != nil {
			return err
		}
	}
	rep, applyErr := provision.Apply(ctx, pl, conn, opts)
	writeReport(g.stdout, c, rep, time.Since(start))
	if applyErr != nil {
		if rep != nil && rep.FailedHost != "" {
			return fmt.Errorf("apply failed on %s at %q (stage %s): %w", rep.FailedHost, rep.FailedStep, rep.FailedStage, applyErr)
		}
		return fmt.Errorf("apply: %w", applyErr)
	}
	if slices.ContainsFunc(pl.Stages, func(s plan.Stage) bool { return s.Name == "control-plane/kubeconfig" }) {
		fmt.Fprintf(g.stdout, "Admin kubeconfig: %s\n", c.kubeconfigPath())
	}
	return nil
}

// hostBinaries lists, per host, the binaries it needs that no artifact
// provides: those must be on the host already.
func hostBinaries(inv *inventory.Inventory) map[string][]string {
	out := map[string][]string{}
	for _, h := range inv.Hosts {
		for _, b := range roles.NeededBinaries(inv, h) {
			if _, ok := inv.Artifact(b); !ok {
				out[h.Name] = append(out[h.Name], b)
			}
		}
	}
	return out
}

// kubectlHost is the master whose admin kubeconfig labels nodes: the one the
// plan initializes, else the first master.
func kubectlHost(pl *plan.Plan, inv *inventory.Inventory) string {
	for _, st := range pl.Stages {
		for _, s := range st.Steps {
			if s.Op == plan.OpKubeadmInit {
				return s.Host
			}
		}
	}
	return inv.Topology.Masters[0]
}

// lockOwner says who holds the lock: user@host, pid and since when.
func lockOwner(start time.Time) string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s@%s pid %d since %s", name, host, os.Getpid(), start.UTC().Format(time.RFC3339))
}

// confirm asks on the terminal, which apply checked it has before
// connecting, so a script never applies a plan nobody saw by accident.
func confirm(w io.Writer) error {
	fmt.Fprint(w, "\nApply? Only 'yes' is accepted. [yes/no]: ")
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if strings.TrimSpace(line) != "yes" {
		return &exitCodeError{code: exitError, err: errors.New("apply cancelled; nothing was changed")}
	}
	return nil
}

// readSavedPlan reads a plan file written by kprov plan --out.
func readSavedPlan(path string) (*savedPlan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("plan file: %w", err)
	}
	var sp savedPlan
	if err := json.Unmarshal(b, &sp); err != nil {
		return nil, fmt.Errorf("plan file %s: %w", path, err)
	}
	if sp.Version != savedPlanVersion || sp.Plan == nil || sp.Facts == nil {
		return nil, fmt.Errorf("plan file %s: not a kprov plan (version %d)", path, sp.Version)
	}
	return &sp, nil
}

// maxListedChanges bounds how many changed facts a refused saved plan names.
const maxListedChanges = 5

// checkSavedPlan refuses a saved plan when the hosts changed since it was
// made (other facts), or when the same facts now give another plan (the
// inventory or templates changed). The plan applied is the fresh one, which
// carries the file contents a saved plan leaves out; it equals the saved one.
func checkSavedPlan(sp *savedPlan, facts *plan.Facts, plan *plan.Plan) error {
	if sp.Facts.Digest() != facts.Digest() || sp.Plan.FactsDigest != facts.Digest() {
		what := "their facts differ"
		if changes := sp.Facts.Changes(facts); len(changes) > 0 {
			if len(changes) > maxListedChanges {
				changes = append(changes[:maxListedChanges], fmt.Sprintf("%d more", len(changes)-maxListedChanges))
			}
			what = strings.Join(changes, "; ")
		}
		return fmt.Errorf("the hosts changed since the plan was saved (%s): run kprov plan --out again and review it", what)
	}
	want, _ := json.Marshal(sp.Plan)
	got, _ := json.Marshal(plan)
	if !bytes.Equal(want, got) {
		return errors.New("the inventory or templates changed since the plan was saved (the same facts now give another plan): run kprov plan --out again and review it")
	}
	return nil
}

// progress prints one line per stage as it starts and ends, as text on
// stdout, or as log lines with --log-format json so machines can follow.
func (g *globalOptions) progress(inv *inventory.Inventory) func(provision.StageEvent) {
	return func(ev provision.StageEvent) {
		what := stageDescription(inv, ev.Stage)
		tag := ev.Stage.Name
		if i := strings.IndexByte(tag, '/'); i > 0 {
			tag = tag[:i]
		}
		if g.logFormat == "json" {
			kv := []any{"stage", ev.Stage.Name, "index", ev.Index, "of", ev.Total, "what", what}
			if ev.Done {
				kv = append(kv, "took", ev.Duration.Round(time.Millisecond).String(), "changed", ev.Changed)
				if ev.Err != nil {
					g.log.Error("stage failed", append(kv, "err", ev.Err)...)
					return
				}
				g.log.Info("stage done", kv...)
				return
			}
			g.log.Info("stage", kv...)
			return
		}
		switch {
		case !ev.Done:
			fmt.Fprintf(g.stdout, "[%s] %s ...\n", tag, what)
		case ev.Err != nil:
			fmt.Fprintf(g.stdout, "[%s] %s: FAILED after %s\n", tag, what, ev.Duration.Round(time.Millisecond))
		default:
			fmt.Fprintf(g.stdout, "[%s] %s: done in %s, %d changed\n", tag, what, ev.Duration.Round(time.Millisecond), ev.Changed)
		}
	}
}

// stageDescription says what a stage does, with counts, for a person.
func stageDescription(inv *inventory.Inventory, st *plan.Stage) string {
	parts := strings.Split(st.Name, "/")
	hosts := map[string]bool{}
	for _, s := range st.Steps {
		hosts[s.Host] = true
	}
	members := inv.Topology.EtcdMembers
	nth := func(name string) string {
		return fmt.Sprintf("%d/%d (%s)", slices.Index(members, name)+1, len(members), name)
	}
	switch {
	case len(parts) == 3 && parts[0] == "etcd" && parts[1] == "add":
		return "adding member " + nth(parts[2])
	case len(parts) == 3 && parts[0] == "etcd" && parts[1] == "bootstrap":
		return "starting member " + nth(parts[2]) + " as a new cluster"
	case len(parts) == 3 && parts[0] == "etcd" && parts[1] == "remove":
		return "removing member " + parts[2]
	case len(parts) == 3 && parts[0] == "etcd" && parts[1] == "restart":
		return "restarting member " + parts[2]
	case len(parts) == 3 && parts[0] == "control-plane" && parts[1] == "init":
		return "kubeadm init on " + parts[2]
	case len(parts) == 3 && parts[0] == "control-plane" && parts[1] == "join":
		return "joining master " + parts[2]
	}
	return fmt.Sprintf("%s: %d steps on %d hosts", st.Name, len(st.Steps), len(hosts))
}

// writeReport prints the summary: per host what changed, per stage its time.
func writeReport(w io.Writer, c *cluster, rep *provision.Report, took time.Duration) {
	if rep == nil {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tROLES\tCHANGED")
	roles := hostRoles(c)
	for _, h := range hostNames(c) {
		ch := rep.Changes[h]
		what := "-"
		if len(ch) > 0 {
			what = fmt.Sprintf("%d: %s", len(ch), summarizeChanges(ch))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", h, roles[h], what)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tHOSTS\tSTEPS\tCHANGED\tTIME")
	for _, s := range rep.Stages {
		status := s.Duration.Round(time.Millisecond).String()
		if s.Err != "" {
			status += " FAILED"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", s.Name, s.Hosts, s.Steps, s.Changed, status)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%d changes in %s\n", rep.Changed(), took.Round(time.Millisecond))
}

// summarizeChanges counts a host's changes by operation.
func summarizeChanges(steps []string) string {
	count := map[string]int{}
	var order []string
	for _, s := range steps {
		op, _, _ := strings.Cut(s, " ")
		if count[op] == 0 {
			order = append(order, op)
		}
		count[op]++
	}
	var parts []string
	for _, op := range order {
		parts = append(parts, fmt.Sprintf("%d %s", count[op], op))
	}
	return strings.Join(parts, ", ")
}
