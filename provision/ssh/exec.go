package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Command is one remote shell command.
type Command struct {
	Cmd       string        // shell command line, run by sh on the host
	Stdin     io.Reader     // fed to the command; the way to pass a secret without putting it on a command line
	Secrets   []string      // values replaced by "[redacted]" in every log line and error
	Timeout   time.Duration // 0 means the host's CommandTimeout
	MaxOutput int           // bytes kept of each of stdout and stderr; 0 means DefaultMaxOutput
}

// Result is what a finished command produced. Stdout and Stderr are raw (not
// redacted: callers may need a token the command printed); errors built from
// them are redacted.
type Result struct {
	Stdout    []byte
	Stderr    []byte
	Truncated bool // output beyond MaxOutput was discarded
	Duration  time.Duration
}

// Redacted is what replaces a secret value in logs and errors.
const Redacted = "[redacted]"

// redactor replaces secret values. Longer secrets are replaced first so a
// secret containing another is not half-revealed.
type redactor struct{ r *strings.Replacer }

func newRedactor(secrets []string) redactor {
	s := slices.DeleteFunc(slices.Clone(secrets), func(v string) bool { return v == "" })
	if len(s) == 0 {
		return redactor{}
	}
	slices.SortFunc(s, func(a, b string) int { return len(b) - len(a) })
	pairs := make([]string, 0, 2*len(s))
	for _, v := range s {
		pairs = append(pairs, v, Redacted)
	}
	return redactor{strings.NewReplacer(pairs...)}
}

func (r redactor) String(s string) string {
	if r.r == nil {
		return s
	}
	return r.r.Replace(s)
}

// redactedError hides secrets in an error's text while keeping its chain for
// errors.Is and errors.As (the wrapped errors themselves are never printed by
// this package).
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

func (r redactor) Error(err error) error {
	if err == nil || r.r == nil {
		return err
	}
	msg := r.String(err.Error())
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

// capBuffer keeps the first max bytes written and counts the rest, so a
// runaway command cannot exhaust memory; it never fails a write, because a
// failing writer would stall the remote command on a full pipe.
type capBuffer struct {
	mu      sync.Mutex
	buf     []byte
	max     int
	dropped int64
}

func (b *capBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	room := b.max - len(b.buf)
	if room > 0 {
		n := min(room, len(p))
		b.buf = append(b.buf, p[:n]...)
		b.dropped += int64(len(p) - n)
	} else {
		b.dropped += int64(len(p))
	}
	return len(p), nil
}

// bytes returns a copy of what was kept, safe while writes may still arrive.
func (b *capBuffer) bytes() ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.buf), b.dropped > 0
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// wrap turns a command into the line sent to the host: as root it is sent
// as is; otherwise through sudo -n, which fails at once instead of waiting
// for a password prompt no one will answer.
func (c *Client) wrap(cmd string) string {
	if !c.sudo {
		return cmd
	}
	return "sudo -n -- sh -c " + shellQuote(cmd)
}

// Run runs cmd on the host and returns its output. A non-zero exit is an
// *ExitError; a timeout matches ErrTimeout and context.DeadlineExceeded;
// cancelling ctx stops the remote command.
func (c *Client) Run(ctx context.Context, cmd Command) (Result, error) {
	red := newRedactor(cmd.Secrets)
	shown := red.String(cmd.Cmd)
	res, err := c.run(ctx, c.wrap(cmd.Cmd), shown, cmd, red)
	return res, hostErr(c.cfg.Host, err)
}

func (c *Client) run(ctx context.Context, line, shown string, cmd Command, red redactor) (Result, error) {
	timeout := cmd.Timeout
	if timeout == 0 {
		timeout = c.cfg.CommandTimeout
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	max := cmd.MaxOutput
	if max <= 0 {
		max = DefaultMaxOutput
	}
	start := time.Now()
	c.log.Debug("run", "cmd", shown)

	sess, err := c.conn.NewSession()
	if err != nil {
		return Result{}, fmt.Errorf("run %q: new session: %w", shown, err)
	}
	defer sess.Close()
	stdout, stderr := &capBuffer{max: max}, &capBuffer{max: max}
	sess.Stdout, sess.Stderr = stdout, stderr
	if cmd.Stdin != nil {
		sess.Stdin = cmd.Stdin
	}
	if err := sess.Start(line); err != nil {
		return Result{}, red.Error(fmt.Errorf("run %q: start: %w", shown, err))
	}
	waited := make(chan error, 1)
	go func() { waited <- sess.Wait() }()

	select {
	case err = <-waited:
	case <-ctx.Done():
		// Closing the channel alone does not stop a command that has no
		// terminal: sshd just closes its pipes. SIGTERM rather than SIGKILL
		// because sudo relays TERM to the command but cannot relay KILL,
		// which would leave the command running as an orphan.
		_ = sess.Signal(ssh.SIGTERM)
		_ = sess.Close()
		select {
		case <-waited:
		case <-time.After(2 * time.Second):
			// sshd keeps the channel open while the command lives; stop
			// waiting rather than hang the caller.
		}
		err = ctx.Err()
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w after %s: %w", ErrTimeout, timeout, err)
		}
		err = fmt.Errorf("run %q: %w", shown, err)
	}
	res := Result{Duration: time.Since(start)}
	var cut1, cut2 bool
	res.Stdout, cut1 = stdout.bytes()
	res.Stderr, cut2 = stderr.bytes()
	res.Truncated = cut1 || cut2
	var exit *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case err == nil:
		c.log.Debug("ran", "cmd", shown, "took", res.Duration)
		return res, nil
	case errors.As(err, &exit):
		err = &ExitError{Command: shown, Status: exit.ExitStatus(), Signal: exit.Signal(), Stderr: red.String(string(res.Stderr))}
	case errors.As(err, &missing):
		err = fmt.Errorf("run %q: exited without a status (connection lost?): %w", shown, err)
	}
	c.log.Debug("run failed", "cmd", shown, "err", red.String(err.Error()))
	return res, red.Error(err)
}

// probeSudo checks once per connection that sudo works without a password,
// so that a missing sudoers rule fails the host up front with instructions
// rather than at some later step.
func (c *Client) probeSudo(ctx context.Context) error {
	const probe = "sudo -n true"
	_, err := c.run(ctx, probe, probe, Command{Timeout: c.cfg.ConnectTimeout}, redactor{})
	var exit *ExitError
	if errors.As(err, &exit) {
		return &SudoError{User: c.cfg.User, Stderr: exit.Stderr}
	}
	if err != nil {
		return fmt.Errorf("sudo probe: %w", err)
	}
	return nil
}
