package provision

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/provision/ssh"
)

// ErrLockHeld is what a LockHeldError matches with errors.Is.
var ErrLockHeld = errors.New("another apply holds the cluster lock")

// LockHeldError is an apply refused because another one holds the lock.
type LockHeldError struct {
	Host   string // where the lock file is
	Holder string // what the holder wrote: who, pid, since when
}

func (e *LockHeldError) Error() string {
	return fmt.Sprintf("another apply holds the cluster lock (%s:%s): %s; wait for it to finish, or if it died, run again with --break-lock", e.Host, plan.LockPath, e.Holder)
}

// Is makes errors.Is(err, ErrLockHeld) true.
func (e *LockHeldError) Is(target error) bool { return target == ErrLockHeld }

// Lock is a held cluster lock.
type Lock struct {
	ex    ssh.Executor
	owner string
}

// AcquireLock creates the lock file on ex, failing with *LockHeldError when
// it exists. noclobber makes the shell open it with O_EXCL, so of two applies
// racing exactly one wins. owner is one line naming the holder (user@host,
// pid, start time). With breakLock an existing lock is removed first; the
// caller warns about that, since the other apply may still be running.
func AcquireLock(ctx context.Context, ex ssh.Executor, owner string, breakLock bool) (*Lock, string, error) {
	if strings.ContainsAny(owner, "\n\x00") {
		return nil, "", errors.New("lock owner must be one line")
	}
	broken := ""
	if breakLock {
		res, err := ex.Run(ctx, ssh.Command{Cmd: scriptLockBreak()})
		if err != nil {
			return nil, "", fmt.Errorf("break lock: %w", err)
		}
		broken = strings.TrimSpace(string(res.Stdout))
	}
	cmd := scriptLockAcquire(owner)
	res, err := ex.Run(ctx, ssh.Command{Cmd: cmd})
	if err != nil {
		return nil, broken, fmt.Errorf("lock: %w", err)
	}
	status, holder, _ := strings.Cut(strings.TrimSpace(string(res.Stdout)), "\n")
	if status != "acquired" {
		return nil, broken, &LockHeldError{Host: ex.Name(), Holder: strings.TrimSpace(holder)}
	}
	return &Lock{ex: ex, owner: owner}, broken, nil
}

// Release removes the lock file if it is still this run's: after someone
// broke it and another apply took it, it is theirs to remove.
func (l *Lock) Release(ctx context.Context) error {
	cmd := scriptLockRelease(l.owner)
	if _, err := l.ex.Run(ctx, ssh.Command{Cmd: cmd}); err != nil {
		return fmt.Errorf("release lock: %w", err)
	}
	return nil
}
