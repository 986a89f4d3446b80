package provision

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/charmbracelet/log"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/provision/ssh"
)

// ApplyOptions are what Apply needs besides the plan and the connections.
type ApplyOptions struct {
	// Inventory maps the plan's host names to hosts (addresses, roles) and
	// gives the etcd data directory wipe-data-dir may remove.
	Inventory *inventory.Inventory
	// Departing are the machines of etcd members outside the inventory
	// that the plan stops and wipes after their removal (DepartingHosts):
	// the only hosts apply connects to that the inventory does not list.
	Departing []*inventory.Host
	// EtcdTLS is kprov's etcd client configuration (EtcdClientTLS); needed
	// when the plan has etcd steps.
	EtcdTLS *tls.Config
	// ClusterCA verifies the API server's certificate for wait-apiserver.
	ClusterCA *x509.CertPool
	// StateDir receives the admin kubeconfig (fetch-kubeconfig).
	StateDir string
	// KubectlHost is the master whose admin.conf label-taint-node uses;
	// empty means the host of the plan's kubeadm init, else the first master.
	KubectlHost string
	// Secrets are values never to appear in a log line or error (bootstrap
	// token, certificate key): commands that might print them are redacted.
	Secrets []string
	// WaitTimeout bounds each wait (etcd healthy or caught up, promotion
	// retries, the API server); 0 means DefaultWaitTimeout.
	WaitTimeout time.Duration
	// KubeadmTimeout bounds kubeadm init and join; 0 means DefaultKubeadmTimeout.
	KubeadmTimeout time.Duration
	// CommandTimeout bounds other commands; 0 means DefaultCommandTimeout.
	CommandTimeout time.Duration
	// OnStage is told when a stage starts and ends; nil ignores. It is how
	// the CLI prints one progress line per stage: libraries do not print.
	OnStage func(StageEvent)
	// OnStep is told when a step starts on a host and when it ends, with
	// whether it changed something or why it failed; nil ignores. It is how
	// a view shows which hosts are busy with what. One host's calls come in
	// order; calls for hosts of a parallel stage come from several
	// goroutines at once.
	OnStep func(StepEvent)
	// Logger receives each step and each change at debug level (showing
	// changes to a person is the view's job, through OnStep); nil discards.
	Logger *log.Logger
	// Now is the clock for what the apply records in the state directory
	// (when a renewed join secret reached the cluster); nil means time.Now.
	Now func() time.Time
}

// Defaults for ApplyOptions.
const (
	// DefaultWaitTimeout is long enough for a learner to catch up on a
	// cluster with a large database, short enough that a member that will
	// never come up does not hold the run for long.
	DefaultWaitTimeout = 3 * time.Minute
	// DefaultKubeadmTimeout covers image pulls on a slow link; kubeadm's own
	// waits for the control plane take up to 4 minutes.
	DefaultKubeadmTimeout = 15 * time.Minute
	// DefaultCommandTimeout covers systemctl starting a unit (etcd's
	// TimeoutStartSec is 90s by default).
	DefaultCommandTimeout = 3 * time.Minute
)

// StageEvent is a stage starting (Done false) or ending (Done true).
type StageEvent struct {
	Index, Total int
	Stage        *plan.Stage
	Done         bool
	Duration     time.Duration
	Changed      int // steps that changed something (when Done)
	Err          error
}

// StepEvent is a step starting on a host (Done false) or ending (Done
// true). A host that fails before its step could start (its connection, the
// directories for its uploads) gets only the ending, with Err set.
type StepEvent struct {
	Stage   *plan.Stage
	Host    string
	Step    plan.Step
	Done    bool
	Changed bool  // the step changed something on the host (when Done)
	Err     error // why the step failed (when Done)
}

// Report is what an apply did.
type Report struct {
	Stages []StageReport `json:"stages"`
	// Changes lists, per host, the steps that changed something, in order.
	Changes map[string][]plan.Step `json:"changes"`
	// Failed names the first failing host and step; empty on success.
	FailedStage string        `json:"failed_stage,omitempty"`
	FailedHost  string        `json:"failed_host,omitempty"`
	FailedStep  string        `json:"failed_step,omitempty"`
	Duration    time.Duration `json:"duration"`
}

// StageReport is one stage's outcome.
type StageReport struct {
	Name     string        `json:"name"`
	Parallel int           `json:"parallel"`
	Hosts    int           `json:"hosts"`
	Steps    int           `json:"steps"`
	Changed  int           `json:"changed"`
	Duration time.Duration `json:"duration"`
	Err      string        `json:"error,omitempty"`
}

// Changed counts the steps of the run that changed something.
func (r *Report) Changed() int {
	n := 0
	for _, s := range r.Stages {
		n += s.Changed
	}
	return n
}

// StepError is a failed step: which host, which step, why.
type StepError struct {
	Host string
	Step plan.Step
	Err  error
}

// Error leaves the host out: Apply wraps every StepError in an
// ssh.HostError, and the transport's errors already name the host.
func (e *StepError) Error() string {
	return fmt.Sprintf("%s: %s", e.Step, withoutHost(e.Host, e.Err))
}

func (e *StepError) Unwrap() error { return e.Err }

// Apply carries the plan out: the stages in order; within a stage each
// host's steps in order, different hosts in parallel up to the stage's
// bound. The first failing stage stops the run; its error names every
// failed host and step. Every step checks the live state first and does
// nothing when its effect is already there, so applying again after any
// interruption converges. Apply is the only code in kprov that changes hosts.
func Apply(ctx context.Context, pl *plan.Plan, conn Connector, opts ApplyOptions) (*Report, error) {
	if opts.Inventory == nil {
		return nil, errors.New("apply: no inventory")
	}
	a := newApplier(conn, opts)
	defer a.close()
	start := time.Now()
	rep := &Report{Changes: map[string][]plan.Step{}}
	defer func() { rep.Duration = time.Since(start) }()
	for i := range pl.Stages {
		st := &pl.Stages[i]
		if len(st.Steps) == 0 {
			continue
		}
		if err := ctx.Err(); err != nil {
			return rep, fmt.Errorf("apply: before stage %s: %w", st.Name(), err)
		}
		a.notify(StageEvent{Index: i + 1, Total: len(pl.Stages), Stage: st})
		sr, err := a.stage(ctx, st, rep)
		rep.Stages = append(rep.Stages, sr)
		a.notify(StageEvent{Index: i + 1, Total: len(pl.Stages), Stage: st, Done: true, Duration: sr.Duration, Changed: sr.Changed, Err: err})
		if err != nil {
			rep.FailedStage = st.Name()
			var se *StepError
			if errors.As(err, &se) {
				rep.FailedHost, rep.FailedStep = se.Host, se.Step.String()
			}
			return rep, fmt.Errorf("stage %s: %w", st.Name(), err)
		}
	}
	return rep, nil
}

// applier holds what one Apply run shares across steps.
type applier struct {
	conn Connector
	opts ApplyOptions
	inv  *inventory.Inventory
	log  *log.Logger

	etcd *etcdOps
}

func newApplier(conn Connector, opts ApplyOptions) *applier {
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = DefaultWaitTimeout
	}
	if opts.KubeadmTimeout <= 0 {
		opts.KubeadmTimeout = DefaultKubeadmTimeout
	}
	if opts.CommandTimeout <= 0 {
		opts.CommandTimeout = DefaultCommandTimeout
	}
	logger := opts.Logger
	if logger == nil {
		logger = log.New(io.Discard)
	}
	a := &applier{conn: conn, opts: opts, inv: opts.Inventory, log: logger}
	a.etcd = &etcdOps{a: a}
	return a
}

func (a *applier) close() { a.etcd.close() }

func (a *applier) notify(ev StageEvent) {
	if a.opts.OnStage != nil {
		a.opts.OnStage(ev)
	}
}

func (a *applier) notifyStep(ev StepEvent) {
	if a.opts.OnStep != nil {
		a.opts.OnStep(ev)
	}
}

// connect returns the connection to a host of the inventory.
func (a *applier) connect(ctx context.Context, name string) (ssh.Executor, error) {
	h := a.inv.Host(name)
	if h == nil {
		if i := slices.IndexFunc(a.opts.Departing, func(d *inventory.Host) bool { return d.Name == name }); i >= 0 {
			h = a.opts.Departing[i]
		}
	}
	if h == nil {
		return nil, fmt.Errorf("host %s is not in the inventory", name)
	}
	return a.conn.Connect(ctx, h)
}

// stage runs one stage: hosts in parallel within the bound, each host's
// steps in order, stopping that host at its first failure.
func (a *applier) stage(ctx context.Context, st *plan.Stage, rep *Report) (StageReport, error) {
	start := time.Now()
	var hosts []string
	byHost := map[string][]plan.Step{}
	for _, s := range st.Steps {
		if _, ok := byHost[s.Host]; !ok {
			hosts = append(hosts, s.Host)
		}
		byHost[s.Host] = append(byHost[s.Host], s)
	}
	sr := StageReport{Name: st.Name(), Parallel: st.Parallel, Hosts: len(hosts), Steps: len(st.Steps)}
	var changedMu sync.Mutex
	// A serial stage runs its hosts one after another in plan order, and
	// stops at the first that fails: a removal's stop and wipe on the
	// departing member's host must not run when its removal, through
	// another host, did not take effect.
	serial := max(st.Parallel, 1) == 1
	var serialFailed atomic.Bool
	_, err := ssh.ForEach(ctx, hosts, max(st.Parallel, 1), func(ctx context.Context, host string) (struct{}, error) {
		if serial && serialFailed.Load() {
			a.log.Debug("not run: an earlier host of the serial stage failed", "stage", st.Name(), "host", host)
			return struct{}{}, nil
		}
		fail := func(step plan.Step, err error) (struct{}, error) {
			serialFailed.Store(true)
			a.notifyStep(StepEvent{Stage: st, Host: host, Step: step, Done: true, Err: err})
			return struct{}{}, &ssh.HostError{Host: host, Err: &StepError{Host: host, Step: step, Err: err}}
		}
		ex, err := a.connect(ctx, host)
		if err != nil {
			return fail(byHost[host][0], err)
		}
		dirsMade := false
		for _, step := range byHost[host] {
			// The directories are made once, before the host's first upload,
			// so a failure there is reported at the upload that needed them.
			if step.Op == plan.OpUploadFile && !dirsMade {
				if err := a.makeDirs(ctx, ex, byHost[host]); err != nil {
					return fail(step, err)
				}
				dirsMade = true
			}
			a.log.Debug("step", "stage", st.Name(), "host", host, "step", step.String())
			a.notifyStep(StepEvent{Stage: st, Host: host, Step: step})
			changed, err := a.step(ctx, ex, step)
			if err != nil {
				return fail(step, err)
			}
			if changed {
				a.log.Debug("changed", "host", host, "step", step.String())
				changedMu.Lock()
				sr.Changed++
				rep.Changes[host] = append(rep.Changes[host], step)
				changedMu.Unlock()
			}
			a.notifyStep(StepEvent{Stage: st, Host: host, Step: step, Done: true, Changed: changed})
		}
		return struct{}{}, nil
	})
	sr.Duration = time.Since(start)
	if err != nil {
		sr.Err = err.Error()
	}
	return sr, err
}

// makeDirs creates the directories the host's uploads go into, in one
// command: the transport writes a temporary file beside the target, so the
// directory must exist first.
func (a *applier) makeDirs(ctx context.Context, ex ssh.Executor, steps []plan.Step) error {
	var dirs []string
	for _, s := range steps {
		if s.Op != plan.OpUploadFile {
			continue
		}
		if d := filepath.Dir(s.Path); !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	if len(dirs) == 0 {
		return nil
	}
	if _, err := a.run(ctx, ex, scriptMakeDirs(dirs), a.opts.CommandTimeout); err != nil {
		return fmt.Errorf("create directories for uploads: %w", err)
	}
	return nil
}

// step carries out one step through the table of executors and reports
// whether it changed anything.
func (a *applier) step(ctx context.Context, ex ssh.Executor, s plan.Step) (bool, error) {
	run, ok := executors[s.Op]
	if !ok {
		return false, fmt.Errorf("unknown operation %q", s.Op)
	}
	return run(ctx, a, ex, s)
}

// run runs a command with the run's secrets, and any more it is given (the
// secret a step carries), redacted from its log lines and errors.
func (a *applier) run(ctx context.Context, ex ssh.Executor, cmd string, timeout time.Duration, secrets ...string) (ssh.Result, error) {
	if len(secrets) > 0 {
		secrets = append(slices.Clone(a.opts.Secrets), secrets...)
	} else {
		secrets = a.opts.Secrets
	}
	return runCapped(ctx, ex, ssh.Command{Cmd: cmd, Timeout: timeout, Secrets: secrets})
}

// now is the apply's clock.
func (a *applier) now() time.Time {
	if a.opts.Now != nil {
		return a.opts.Now()
	}
	return time.Now()
}

// changedBy runs a command that checks the live state itself and prints
// "changed" only when it changed something.
func (a *applier) changedBy(ctx context.Context, ex ssh.Executor, cmd string) (bool, error) {
	res, err := a.run(ctx, ex, cmd, a.opts.CommandTimeout)
	if err != nil {
		return false, err
	}
	return changedOutput(res), nil
}

// upload writes a file. An artifact (Source) is checked against the
// inventory's SHA-256 before a byte is sent, so a tampered or stale local
// file never reaches a host; the transport itself skips a file whose
// content, mode and owner already match.
func (a *applier) upload(ctx context.Context, ex ssh.Executor, s plan.Step) (bool, error) {
	spec := ssh.FileSpec{Path: s.Path, Mode: s.Mode, Secret: s.Secret}
	if s.Source == "" {
		spec.Content = bytes.NewReader(s.Content)
		return ex.Upload(ctx, spec)
	}
	f, err := os.Open(s.Source)
	if err != nil {
		return false, fmt.Errorf("artifact: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, fmt.Errorf("artifact %s: %w", s.Source, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != s.SHA256 {
		return false, fmt.Errorf("artifact %s has sha256 %s, but the inventory says %s: refusing to install it (rebuild or re-download the file, or fix the inventory)", s.Source, got, s.SHA256)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return false, fmt.Errorf("artifact %s: %w", s.Source, err)
	}
	spec.Content = f
	return ex.Upload(ctx, spec)
}

// wipeDataDir removes the etcd data directory, and only that: a plan edited
// by hand (or a bug) must never turn this step into `rm -rf` elsewhere.
func (a *applier) wipeDataDir(ctx context.Context, ex ssh.Executor, s plan.Step) (bool, error) {
	if err := a.checkDataDir(s.Path, "wipe"); err != nil {
		return false, err
	}
	return a.changedBy(ctx, ex, scriptWipeDataDir(s.Path))
}

// checkDataDir refuses a step that would do what to any directory but the
// inventory's etcd data_dir.
func (a *applier) checkDataDir(dir, what string) error {
	want := a.inv.Etcd.DataDir
	if want == "" {
		want = inventory.DefaultEtcdDataDir
	}
	if dir != want || !filepath.IsAbs(dir) || filepath.Clean(dir) != dir || dir == "/" {
		return fmt.Errorf("refusing to %[1]s %[2]q: kprov may %[1]s only the inventory's etcd data_dir (%[3]s)", what, dir, want)
	}
	return nil
}
