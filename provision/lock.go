package provision

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/charmbracelet/log"

	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/provision/ssh"
)

// The cluster lock is a file on the first master (plan.LockPath) holding
// one line that names its holder. The holder touches it every
// LockOptions.Heartbeat while it runs, so the file's age says whether the
// holder is alive: a lock refreshed recently belongs to a running apply and
// is never broken; one not refreshed for LockOptions.StaleAfter was left by
// an apply that died, and --break-lock may remove it. Both ages are read on
// the lock's host with its own clock, so clock skew between operators does
// not matter.

// Defaults for LockOptions.
const (
	// DefaultLockHeartbeat is how often the holder refreshes the lock.
	DefaultLockHeartbeat = 5 * time.Second
	// DefaultLockStaleAfter is how long a lock may go unrefreshed before it
	// counts as left by a dead apply: six missed heartbeats, so a slow link
	// or a loaded host does not make a live lock look dead.
	DefaultLockStaleAfter = 30 * time.Second
)

// ErrLockHeld is what a LockHeldError matches with errors.Is.
var ErrLockHeld = errors.New("another apply holds the cluster lock")

// ErrLockLost is the cause of an apply's context when its lock was removed
// (someone broke it) while it ran.
var ErrLockLost = errors.New("the cluster lock was removed while this apply held it (someone ran --break-lock?), so another apply may be changing the hosts: this one stopped")

// LockHeldError is an apply refused because another one holds the lock.
type LockHeldError struct {
	Host   string        // where the lock file is
	Holder string        // what the holder wrote: who, pid, since when
	Age    time.Duration // since the holder last refreshed it
	// Stale is true when the holder stopped refreshing the lock.
	Stale      bool
	StaleAfter time.Duration
	// BreakRefused is true when --break-lock was asked for a live lock.
	BreakRefused bool
}

func (e *LockHeldError) Error() string {
	where := fmt.Sprintf("another apply holds the cluster lock (%s:%s): %s", e.Host, plan.LockPath, e.Holder)
	if e.Stale {
		return fmt.Sprintf("%s; it was last refreshed %s ago, so that apply has stopped: run again with --break-lock to remove the lock", where, e.Age)
	}
	msg := fmt.Sprintf("%s; it was refreshed %s ago, so that apply is still running: wait for it to finish", where, e.Age)
	if e.BreakRefused {
		msg += fmt.Sprintf(" (--break-lock only removes a lock not refreshed for %s)", e.StaleAfter)
	}
	return msg
}

// Is makes errors.Is(err, ErrLockHeld) true.
func (e *LockHeldError) Is(target error) bool { return target == ErrLockHeld }

// LockOptions say who takes the lock and how.
type LockOptions struct {
	// Owner is one line naming the holder (user@host, pid, start time).
	Owner string
	// Break removes a stale lock (one whose holder stopped refreshing it)
	// before taking it; a live lock is never removed.
	Break bool
	// Heartbeat is how often Keep refreshes the lock; 0 means DefaultLockHeartbeat.
	Heartbeat time.Duration
	// StaleAfter is how old a lock must be to be broken; 0 means DefaultLockStaleAfter.
	StaleAfter time.Duration
	// Logger receives heartbeat failures as warnings; nil discards.
	Logger *log.Logger
}

// Lock is a held cluster lock.
type Lock struct {
	ex   ssh.Executor
	opts LockOptions
}

// AcquireLock creates the lock file on ex, failing with *LockHeldError when
// it exists. noclobber makes the shell open it with O_EXCL, so of two applies
// racing exactly one wins. With opts.Break a stale lock is removed first
// (only if it is still the same holder's and still stale when removed); the
// returned string names the holder whose lock was broken, for a warning.
func AcquireLock(ctx context.Context, ex ssh.Executor, opts LockOptions) (*Lock, string, error) {
	if opts.Owner == "" || strings.ContainsAny(opts.Owner, "\n\x00") {
		return nil, "", errors.New("lock owner must be one non-empty line")
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = DefaultLockHeartbeat
	}
	if opts.StaleAfter <= 0 {
		opts.StaleAfter = DefaultLockStaleAfter
	}
	if opts.Logger == nil {
		opts.Logger = log.New(io.Discard)
	}
	held, err := tryLock(ctx, ex, opts)
	if err != nil || held == nil {
		return &Lock{ex: ex, opts: opts}, "", err
	}
	if !opts.Break {
		return nil, "", held
	}
	if !held.Stale {
		held.BreakRefused = true
		return nil, "", held
	}
	res, err := runCapped(ctx, ex, ssh.Command{Cmd: scriptLockBreakStale(plan.LockPath, held.Holder, opts.StaleAfter), MaxOutput: 4096})
	if err != nil {
		return nil, "", fmt.Errorf("break lock: %w", err)
	}
	if strings.TrimSpace(string(res.Stdout)) != "broken" {
		// Refreshed or taken by someone else in between: not stale any more.
		return nil, "", held
	}
	held2, err := tryLock(ctx, ex, opts)
	if err != nil {
		return nil, held.Holder, err
	}
	if held2 != nil {
		return nil, held.Holder, held2
	}
	return &Lock{ex: ex, opts: opts}, held.Holder, nil
}

// tryLock takes the lock once: a nil error and nil *LockHeldError mean it
// is ours.
func tryLock(ctx context.Context, ex ssh.Executor, opts LockOptions) (*LockHeldError, error) {
	res, err := runCapped(ctx, ex, ssh.Command{Cmd: scriptLockAcquire(plan.LockPath, opts.Owner), MaxOutput: 4096})
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	status, holder, _ := strings.Cut(strings.TrimSpace(string(res.Stdout)), "\n")
	if status == "acquired" {
		return nil, nil
	}
	ageText, ok := strings.CutPrefix(status, "held ")
	secs, err := strconv.ParseInt(ageText, 10, 64)
	if !ok || err != nil {
		return nil, fmt.Errorf("lock: unexpected answer %q from %s", status, ex.Name())
	}
	age := time.Duration(max(secs, 0)) * time.Second
	return &LockHeldError{Host: ex.Name(), Holder: strings.TrimSpace(holder), Age: age, Stale: age >= opts.StaleAfter, StaleAfter: opts.StaleAfter}, nil
}

// Keep refreshes the lock every heartbeat until stop is called, and returns
// a context derived from ctx that is cancelled with ErrLockLost when the
// lock is found gone or taken by another apply. A refresh that fails to run
// (a lost connection) is only warned about: the apply's own steps on that
// connection fail on their own, and a lock left unrefreshed goes stale.
func (l *Lock) Keep(ctx context.Context) (context.Context, func()) {
	kctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(l.opts.Heartbeat)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-kctx.Done():
				return
			case <-t.C:
			}
			res, err := runCapped(kctx, l.ex, ssh.Command{Cmd: scriptLockRefresh(plan.LockPath, l.opts.Owner), Timeout: l.opts.StaleAfter / 2, MaxOutput: 4096})
			switch {
			case err != nil:
				l.opts.Logger.Warn("cannot refresh the cluster lock", "host", l.ex.Name(), "err", err)
			case strings.TrimSpace(string(res.Stdout)) != "ok":
				cancel(ErrLockLost)
				return
			}
		}
	}()
	return kctx, func() {
		close(done)
		<-stopped
		cancel(nil)
	}
}

// Release removes the lock file if it is still this run's: after someone
// broke it and another apply took it, it is theirs to remove.
func (l *Lock) Release(ctx context.Context) error {
	if _, err := l.ex.Run(ctx, ssh.Command{Cmd: scriptLockRelease(plan.LockPath, l.opts.Owner)}); err != nil {
		return fmt.Errorf("release lock: %w", err)
	}
	return nil
}
