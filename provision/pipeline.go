package provision

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/charmbracelet/log"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/roles"
	"github.com/kprov/kprov/templates"
)

// Cluster is what every operation past validation starts from: the valid
// inventory, its templates, and its PKI from the state directory.
type Cluster struct {
	Inventory *inventory.Inventory
	Templates *templates.Set
	State     *pki.State
}

// LoadCluster loads the templates of a valid inventory and creates or
// reuses the PKI in its state directory, logging each file it creates
// (nil discards).
func LoadCluster(inv *inventory.Inventory, now time.Time, logger *log.Logger) (*Cluster, error) {
	if logger == nil {
		logger = log.New(io.Discard)
	}
	set, err := templates.Load(inv.Cluster.TemplatesDir)
	if err != nil {
		return nil, err
	}
	st, changes, err := pki.Ensure(inv.Cluster.StateDir, roles.PKIRequest(inv), now)
	if err != nil {
		return nil, fmt.Errorf("state directory %s: %w", inv.Cluster.StateDir, err)
	}
	for _, c := range changes {
		logger.Info("pki", "file", c.Path, "change", c.Reason)
	}
	return &Cluster{Inventory: inv, Templates: set, State: st}, nil
}

// KubeconfigPath is where kprov keeps the cluster's admin kubeconfig.
func (c *Cluster) KubeconfigPath() string {
	return filepath.Join(c.Inventory.Cluster.StateDir, "admin.conf")
}

// HostChanges says, per inventory host, what a plan does to it.
func (c *Cluster) HostChanges(p *plan.Plan, facts *plan.Facts) []plan.HostChange {
	return p.HostChanges(c.Inventory, facts)
}

// View is how a pipeline reports what it does. Libraries do not print:
// cmd/kprov implements it as text, JSON or a terminal view.
type View interface {
	// Plan shows a plan with changes before it is confirmed and applied.
	Plan(p *plan.Plan, changes []plan.HostChange) error
	// Confirm asks whether to apply the plan just shown; an error stops the
	// run before anything changes.
	Confirm(ctx context.Context) error
	// Stage is told when a stage starts and when it ends.
	Stage(ev StageEvent)
	// Step is told when a step starts on a host and when it ends, with
	// whether it changed something. Hosts of a stage run in parallel, so
	// calls may come from several goroutines at once.
	Step(ev StepEvent)
	// Warn reports something a person should know that does not stop the run.
	Warn(msg string, keyvals ...any)
}

// Pipeline runs kprov's sequence (gather facts, preflight, plan, lock,
// apply) for one cluster over one set of connections. Every command that
// changes a cluster goes through it, so each gets the same checks in the
// same order.
type Pipeline struct {
	Cluster *Cluster
	Conn    Connector
	// Parallel bounds hosts worked on at once where quorum allows.
	Parallel int
	View     View
	// Logger receives progress at debug level; nil discards.
	Logger *log.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (p *Pipeline) logger() *log.Logger {
	if p.Logger == nil {
		return log.New(io.Discard)
	}
	return p.Logger
}

// ManagedFiles maps each host to the paths kprov manages there: every
// rendered file, and every artifact the host installs (compared by
// checksum like any other file).
func ManagedFiles(c *Cluster) (map[string][]string, error) {
	inv := c.Inventory
	final, err := roles.Render(inv, c.State, roles.Options{Templates: c.Templates, EtcdBootstrap: roles.FormedEtcdBootstrap(inv.Topology.EtcdMembers)})
	if err != nil {
		return nil, err
	}
	files := map[string][]string{}
	for _, h := range final.Hosts {
		for _, f := range h.Files {
			files[h.Name] = append(files[h.Name], f.Path)
		}
	}
	for _, h := range inv.Hosts {
		for _, a := range roles.ArtifactsFor(inv, h) {
			files[h.Name] = append(files[h.Name], roles.InstalledPath(a.Name))
		}
	}
	// kprov restore tells a member it restored from one it must not touch
	// by this marker (roles.RestoredMember); stacked members are the masters.
	for _, name := range inv.Topology.EtcdMembers {
		files[name] = append(files[name], plan.EtcdRestoreMarkerPath)
	}
	return files, nil
}

// Facts connects to every host read-only and reads what the plan needs:
// each host's probe, the external etcd membership, the Kubernetes nodes
// from a master that runs a control plane, and on the operator's machine
// the inventory's image archives (ReadImageArchives) and whether the state
// directory holds the admin kubeconfig.
func (p *Pipeline) Facts(ctx context.Context) (*plan.Facts, error) {
	facts, err := p.hostFacts(ctx)
	if err != nil {
		return nil, err
	}
	if facts.ImageArchives, err = ReadImageArchives(p.Cluster.Inventory); err != nil {
		return nil, err
	}
	return facts, nil
}

// hostFacts is Facts without what is read on the operator's machine
// (the image archives): what kprov status shows.
func (p *Pipeline) hostFacts(ctx context.Context) (*plan.Facts, error) {
	return p.factsWith(ctx, nil)
}

// factsWith is hostFacts with more paths checksummed on each host (kprov
// reset's, roles.ResetFiles).
func (p *Pipeline) factsWith(ctx context.Context, extra map[string][]string) (*plan.Facts, error) {
	c := p.Cluster
	inv := c.Inventory
	files, err := ManagedFiles(c)
	if err != nil {
		return nil, err
	}
	for host, paths := range extra {
		for _, f := range paths {
			if !slices.Contains(files[host], f) {
				files[host] = append(files[host], f)
			}
		}
	}
	opts := GatherOptions{Parallel: p.Parallel, Files: files, Logger: p.Logger}
	if inv.Topology.EtcdMode == inventory.EtcdExternal {
		if opts.EtcdTLS, err = EtcdClientTLS(c.State); err != nil {
			return nil, err
		}
	}
	facts, err := Gather(ctx, inv, p.Conn, opts)
	if err != nil {
		return nil, err
	}
	for _, name := range inv.Topology.Masters {
		if hf := facts.Hosts[name]; hf == nil || !hf.Reachable || !hf.ControlPlane {
			continue
		}
		exec, err := p.Conn.Connect(ctx, inv.Host(name))
		if err == nil {
			facts.Nodes, err = GatherNodes(ctx, exec)
		}
		if err == nil {
			break
		}
		// Without the node list the plan sets every node's labels and taints
		// again, which is harmless; say why instead of failing the plan.
		p.warn("cannot list nodes; labels and taints will be set again", "master", name, "err", err)
	}
	// A master the inventory no longer lists takes its stacked etcd
	// member with it: the planner needs the members for that alone.
	if inv.Topology.EtcdMode == inventory.EtcdStacked && len(roles.StaleMasters(inv, facts.Nodes)) > 0 {
		tlsCfg, err := EtcdClientTLS(c.State)
		if err != nil {
			return nil, err
		}
		GatherStackedEtcd(ctx, inv, p.Conn, facts, tlsCfg, p.logger())
	}
	if fi, err := os.Stat(c.KubeconfigPath()); err == nil && fi.Size() > 0 {
		facts.KubeconfigFetched = true
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return facts, nil
}

func (p *Pipeline) warn(msg string, kv ...any) {
	if p.View != nil {
		p.View.Warn(msg, kv...)
		return
	}
	p.logger().Warn(msg, kv...)
}

// Plan plans over gathered facts, with the join secrets' expiry judged at
// the pipeline's clock.
//
// Before the pure planning step it renews in the state directory each join
// secret the plan must give the cluster (roles.JoinSecretsToRenew: a master
// or node is about to join a running cluster and the secret has expired or
// is about to), marked pending, so the join configurations the plan renders
// carry the new value and the plan's join-secrets stage gives it to the
// cluster. A secret already pending is kept: planning again (kprov plan
// --out, then apply; or after an interrupted apply) gives the same plan.
// The values in the cluster stay valid until they expire.
func (p *Pipeline) Plan(facts *plan.Facts) (*plan.Plan, error) {
	now := p.now()
	if err := p.renewJoinSecrets(facts, now); err != nil {
		return nil, err
	}
	return roles.Plan(p.Cluster.Inventory, facts, p.Cluster.State, roles.PlanOptions{Parallel: p.Parallel, Templates: p.Cluster.Templates, Now: now})
}

func (p *Pipeline) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// renewJoinSecrets renews in the state directory the join secrets the plan
// will give the cluster, unless they are pending already, and keeps the
// cluster's State in step with the directory.
func (p *Pipeline) renewJoinSecrets(facts *plan.Facts, now time.Time) error {
	st, dir := p.Cluster.State, p.Cluster.Inventory.Cluster.StateDir
	need := roles.JoinSecretsToRenew(p.Cluster.Inventory, facts, st.Secrets, now)
	if need.BootstrapToken && !st.Secrets.BootstrapTokenPending {
		s, err := pki.RenewBootstrapToken(dir, now)
		if err != nil {
			return fmt.Errorf("state directory %s: renew the bootstrap token: %w", dir, err)
		}
		st.Secrets = s
		// The ID is the token's public half; it names its Secret in kube-system.
		p.logger().Info("pki", "file", "secrets.json", "change", "new bootstrap token "+s.BootstrapTokenID()+" (the apply creates it on the cluster)")
	}
	if need.CertificateKey && !st.Secrets.CertificateKeyPending {
		s, err := pki.RenewCertificateKey(dir, now)
		if err != nil {
			return fmt.Errorf("state directory %s: renew the certificate key: %w", dir, err)
		}
		st.Secrets = s
		p.logger().Info("pki", "file", "secrets.json", "change", "new certificate key (the apply uploads the certificates with it)")
	}
	return nil
}

// PlanRequest is what kprov plan asks for.
type PlanRequest struct {
	// Offline plans against fresh hosts without connecting.
	Offline bool
	// Out, when set, is where the plan and its facts are saved (0600) for a
	// later apply to carry out exactly.
	Out string
}

// PlanOnly gathers facts (read-only, or none offline) and plans, saving
// the plan with its facts when asked. It changes nothing on any host.
func (p *Pipeline) PlanOnly(ctx context.Context, req PlanRequest) (*plan.Plan, *plan.Facts, error) {
	var facts *plan.Facts
	if req.Offline {
		names := make([]string, len(p.Cluster.Inventory.Hosts))
		for i, h := range p.Cluster.Inventory.Hosts {
			names[i] = h.Name
		}
		facts = plan.FreshFacts(names)
		// The archives are on the operator's machine: an offline plan
		// reads them like any other, so it shows what each node imports.
		var err error
		if facts.ImageArchives, err = ReadImageArchives(p.Cluster.Inventory); err != nil {
			return nil, nil, err
		}
	} else {
		var err error
		if facts, err = p.Facts(ctx); err != nil {
			return nil, nil, err
		}
	}
	pl, err := p.Plan(facts)
	if err != nil {
		return nil, facts, err
	}
	if req.Out != "" {
		sp := &SavedPlan{Version: SavedPlanVersion, Inventory: p.Cluster.Inventory.Path, Facts: facts, Plan: pl}
		if err := WriteSavedPlan(req.Out, sp, p.Cluster.Inventory.Redact); err != nil {
			return pl, facts, err
		}
	}
	return pl, facts, nil
}

// Preflight checks every host before anything changes and returns every
// problem found, on every host, as one *PreflightError.
func (p *Pipeline) Preflight(ctx context.Context, facts *plan.Facts) error {
	problems, err := Preflight(ctx, p.Cluster.Inventory, facts, p.Conn, PreflightOptions{
		Parallel: p.Parallel, Binaries: HostBinaries(p.Cluster.Inventory), Now: p.Now, Logger: p.Logger,
		MaxFsyncLatency: p.Cluster.Inventory.Etcd.MaxFsyncLatency})
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return &PreflightError{Problems: problems}
	}
	return nil
}

// HostBinaries lists, per host, the binaries it needs that no artifact
// provides: those must be on the host already.
func HostBinaries(inv *inventory.Inventory) map[string][]string {
	out := map[string][]string{}
	for _, h := range inv.Hosts {
		for _, b := range roles.NeededBinaries(inv, h) {
			if slices.Contains(roles.RuntimeArtifacts, b) {
				continue // the runtime rule judges these from the facts
			}
			if _, ok := inv.Artifact(b); !ok {
				out[h.Name] = append(out[h.Name], b)
			}
		}
	}
	return out
}

// ApplyRequest is what the person running apply chose.
type ApplyRequest struct {
	// Saved, when set, is the plan to carry out exactly: apply refuses it
	// when the hosts or the inventory changed since it was made.
	Saved *SavedPlan
	// AutoApprove skips View.Confirm.
	AutoApprove bool
	// BreakLock removes a lock whose holder stopped refreshing it (an apply
	// that died), after a warning; a live lock is never removed.
	BreakLock bool
	// LockOwner is one line naming who holds the lock (user@host, pid, since when).
	LockOwner string
	// LockHeartbeat and LockStaleAfter tune the lock (LockOptions); 0 means the defaults.
	LockHeartbeat, LockStaleAfter time.Duration
}

// ApplyResult is what an apply saw and did.
type ApplyResult struct {
	Facts *plan.Facts
	Plan  *plan.Plan
	// Report is nil when nothing ran (no changes, or refused before the lock).
	Report *Report
	// Kubeconfig is the admin kubeconfig's path when this run fetched it.
	Kubeconfig string
}

// Apply runs the whole sequence under the cluster lock: take the lock (and
// keep it refreshed), gather facts, preflight (every problem on every host
// reported together), plan, check a saved plan against the facts, show the
// plan and confirm, and carry the plan out. The lock comes first so the
// plan a person confirms is the one carried out: no other apply can change
// the hosts between the facts and the last step. A plan without changes
// stops after planning.
func (p *Pipeline) Apply(ctx context.Context, req ApplyRequest) (res *ApplyResult, err error) {
	res = &ApplyResult{}
	err = p.locked(ctx, req, func(ctx context.Context) error { return p.applyLocked(ctx, req, res) })
	return res, err
}

// locked runs f under the cluster lock, kept refreshed while f runs and
// released after it. An error from f after the lock was lost says so.
func (p *Pipeline) locked(ctx context.Context, req ApplyRequest, f func(ctx context.Context) error) (err error) {
	lock, err := p.lock(ctx, req)
	if err != nil {
		return p.lockFailed(ctx, err)
	}
	ctx, stopHeartbeat := lock.Keep(ctx)
	defer func() {
		stopHeartbeat()
		// The run's context may be cancelled (Ctrl-C): release with a fresh one.
		rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if rerr := lock.Release(rctx); rerr != nil {
			p.warn("cluster lock not released; it goes stale and the next run can break it with --break-lock", "host", lock.ex.Name(), "err", rerr)
		}
		if cause := context.Cause(ctx); errors.Is(cause, ErrLockLost) && err != nil {
			err = fmt.Errorf("%w (%v)", ErrLockLost, err)
		}
	}()
	return f(ctx)
}

// applyLocked is Apply once the cluster lock is held: kprov restore runs it
// under the lock it took for the etcd restore, so no apply slips in between.
func (p *Pipeline) applyLocked(ctx context.Context, req ApplyRequest, res *ApplyResult) error {
	c := p.Cluster
	facts, err := p.Facts(ctx)
	if err != nil {
		return err
	}
	res.Facts = facts
	if err := p.Preflight(ctx, facts); err != nil {
		return err
	}
	pl, err := p.Plan(facts)
	if err != nil {
		return err
	}
	res.Plan = pl
	if req.Saved != nil {
		if err := req.Saved.Check(facts, pl, c.Inventory.Redact); err != nil {
			return err
		}
	}
	if pl.Empty() {
		return nil
	}
	rep, err := p.confirmAndApply(ctx, pl, facts, req.AutoApprove, "apply", nil)
	res.Report = rep
	if err != nil {
		return err
	}
	if pl.Has(plan.StageKubeconfig) {
		res.Kubeconfig = c.KubeconfigPath()
	}
	return nil
}

// confirmAndApply shows a plan with changes, asks unless autoApprove, and
// carries it out; what ("apply", "restore") names the run in an error that
// says where it stopped. The report is nil when nothing ran (declined, or
// the options could not be made). commit, when set, runs once the plan is
// confirmed and before anything changes on a host: kprov certs renew
// writes its reissued certificates to the state directory there, so a
// declined renewal leaves the state directory as it was.
func (p *Pipeline) confirmAndApply(ctx context.Context, pl *plan.Plan, facts *plan.Facts, autoApprove bool, what string, commit func() error) (*Report, error) {
	if err := p.View.Plan(pl, p.Cluster.HostChanges(pl, facts)); err != nil {
		return nil, err
	}
	if !autoApprove {
		if err := p.View.Confirm(ctx); err != nil {
			return nil, err
		}
	}
	if commit != nil {
		if err := commit(); err != nil {
			return nil, err
		}
	}
	opts, err := p.applyOptions(pl)
	if err != nil {
		return nil, err
	}
	opts.Departing = DepartingHosts(facts)
	rep, err := Apply(ctx, pl, p.Conn, opts)
	switch {
	case err == nil:
	case rep != nil && rep.FailedHost != "":
		err = fmt.Errorf("%s failed on %s at %q (stage %s): %w", what, rep.FailedHost, rep.FailedStep, rep.FailedStage, err)
	default:
		err = fmt.Errorf("%s: %w", what, err)
	}
	return rep, err
}

// lockFailed explains a lock that could not be taken. When another apply
// holds it, that is the answer. When the lock's host could not be used (no
// connection, no sudo), the other hosts may have problems of their own:
// gather facts and run the preflight, read-only, so one run reports every
// host's problem, as it would have without the lock.
func (p *Pipeline) lockFailed(ctx context.Context, lockErr error) error {
	if errors.Is(lockErr, ErrLockHeld) || ctx.Err() != nil {
		return lockErr
	}
	facts, err := p.Facts(ctx)
	if err != nil {
		return errors.Join(lockErr, err)
	}
	var pe *PreflightError
	if err := p.Preflight(ctx, facts); errors.As(err, &pe) {
		return fmt.Errorf("cannot take the cluster lock, and %w", pe)
	}
	return lockErr
}

// lock takes the cluster lock on the first master.
func (p *Pipeline) lock(ctx context.Context, req ApplyRequest) (*Lock, error) {
	inv := p.Cluster.Inventory
	lockHost := inv.Topology.Masters[0]
	ex, err := p.Conn.Connect(ctx, inv.Host(lockHost))
	if err != nil {
		return nil, fmt.Errorf("lock: %w (apply takes the cluster lock on the first master before anything else: make %s reachable; kprov status shows every host)", err, lockHost)
	}
	lock, broken, err := AcquireLock(ctx, ex, LockOptions{Owner: req.LockOwner, Break: req.BreakLock,
		Heartbeat: req.LockHeartbeat, StaleAfter: req.LockStaleAfter, Logger: p.Logger})
	if broken != "" {
		p.warn("broke the cluster lock: its holder had stopped refreshing it", "host", lockHost, "was", broken)
	}
	return lock, err
}

// applyOptions are what Apply needs from the cluster: the CA that verifies
// API servers, the etcd client, the secrets to redact, where kubectl runs.
func (p *Pipeline) applyOptions(pl *plan.Plan) (ApplyOptions, error) {
	c := p.Cluster
	roots := x509.NewCertPool()
	roots.AddCert(c.State.CA.Cert)
	opts := ApplyOptions{
		Inventory: c.Inventory, ClusterCA: roots, StateDir: c.Inventory.Cluster.StateDir, KubectlHost: kubectlHost(pl, c.Inventory),
		Secrets: []string{c.State.Secrets.BootstrapToken.Reveal(), c.State.Secrets.CertificateKey.Reveal()},
		Logger:  p.Logger,
		Now:     p.Now,
	}
	if p.View != nil {
		opts.OnStage = p.View.Stage
		opts.OnStep = p.View.Step
	}
	var err error
	if opts.EtcdTLS, err = EtcdClientTLS(c.State); err != nil {
		return opts, err
	}
	return opts, nil
}

// kubectlHost is the master whose admin kubeconfig labels nodes: the one the
// plan initializes, else the first master.
func kubectlHost(pl *plan.Plan, inv *inventory.Inventory) string {
	for _, st := range pl.Stages {
		if st.Kind == plan.StageControlPlaneInit {
			return st.Target
		}
	}
	return inv.Topology.Masters[0]
}
