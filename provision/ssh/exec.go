package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/kprov/kprov/internal/shell"
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

// wrap turns a command into the line sent to the host: as root it is sent
// as is; otherwise through sudo -n, which fails at once instead of waiting
// for a password prompt no one will answer.
func (c *Client) wrap(cmd string) string {
	if !c.sudo {
		return cmd
	}
	return "sudo -n -- sh -c " + shell.Quote(cmd)
}

// remoteCommand is a command line as the session executes it.
type remoteCommand struct {
	line string
	// grouped: line is groupWrap's, so the command runs in its own process
	// group and reports that group's ID on stderr.
	grouped bool
}

// command is how every command kprov runs reaches the host: in its own
// process group (groupWrap), as root (wrap).
func (c *Client) command(cmd string) remoteCommand {
	return remoteCommand{line: c.wrap(groupWrap(cmd)), grouped: true}
}

// pgidMarker starts the line groupWrap writes on stderr before the command
// runs: pgidMarker, the process group ID, a newline. The client takes that
// line out of stderr.
const pgidMarker = "kprov-pgid="

// groupWrap makes cmd the leader of a new session, hence of a new process
// group, and has it announce the group's ID first thing on stderr, so that a
// cancelled command can be stopped as a whole by a second session
// (killGroupScript). The "signal" channel request cannot do that: OpenSSH
// refuses it for root logins ("session signalling requires privilege
// separation"), and where it is delivered it reaches only the login shell or
// sudo, not the command's children.
//
// setsid(1) creates the session without forking only when its caller is not
// already a process group leader. sshd makes the login shell one, and both
// it and sudo's sh exec a lone command instead of forking it, so the
// trailing "; exit $?" keeps setsid a forked child (not a leader) of the
// shell; -w is a fallback that waits for the child should setsid fork after
// all. The ID is printed from inside the new session ($$ of the sh that
// setsid started), so it is right either way. Stdin and stdout are the
// session's, untouched.
func groupWrap(cmd string) string {
	return `setsid -w sh -c 'echo "` + pgidMarker + `$$" >&2; exec sh -c "$1"' kprov ` + shell.Quote(cmd) + `; exit $?`
}

// killGroupGrace is how long a cancelled command's process group has after
// SIGTERM before it is sent SIGKILL.
const killGroupGrace = 5 * time.Second

// killGroupTimeout bounds the whole second session that stops a cancelled
// command: connecting the session, sudo, the grace period, SIGKILL. The
// margin is wide: on a loaded host a session and its forks are slow, and a
// stop that times out leaves the command running.
const killGroupTimeout = killGroupGrace + 25*time.Second

// markerWait bounds how long a cancelled command's process group ID is
// waited for; the wrapper prints it before anything else runs.
const markerWait = 2 * time.Second

// killGroupScript sends SIGTERM to process group pgid, polls on the host
// until the group is gone, and sends SIGKILL to what is left once
// killGroupGrace has passed by the host's clock (a count of polls would
// stretch on a loaded host, where each poll's forks are slow). It prints
// "killed" when SIGKILL was needed. dash's kill takes no "--", so the group
// is written -PGID right after the signal.
func killGroupScript(pgid int) string {
	return fmt.Sprintf("kill -TERM -%[1]d 2>/dev/null || exit 0; end=$(( $(date +%%s) + %[2]d )); "+
		"while [ \"$(date +%%s)\" -lt \"$end\" ]; do kill -0 -%[1]d 2>/dev/null || exit 0; sleep 0.1; done; "+
		"kill -KILL -%[1]d 2>/dev/null && echo killed; exit 0", pgid, int(killGroupGrace/time.Second))
}

// pgidFilter passes a grouped command's stderr on to w, byte for byte,
// except for the first marker line (pgidMarker, digits, newline), which it
// takes out and records. Lines before the marker (sudo's warnings) pass
// through; a partial line is held back only while it may still be the
// marker. After the marker, nothing is inspected.
type pgidFilter struct {
	mu      sync.Mutex
	w       io.Writer
	partial []byte // start of a line that may be the marker
	pgid    int
	found   chan struct{} // closed when the marker has been seen
}

func newPGIDFilter(w io.Writer) *pgidFilter {
	return &pgidFilter{w: w, found: make(chan struct{})}
}

func (f *pgidFilter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(p)
	for f.pgid == 0 && len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			f.partial = append(f.partial, p...)
			if !mayBeMarker(f.partial) {
				f.w.Write(f.partial)
				f.partial = nil
			}
			return n, nil
		}
		line := append(f.partial, p[:i+1]...)
		f.partial, p = nil, p[i+1:]
		if pgid, ok := parseMarker(line); ok {
			f.pgid = pgid
			close(f.found)
			continue
		}
		f.w.Write(line)
	}
	if len(p) > 0 {
		f.w.Write(p)
	}
	return n, nil
}

// flush passes on a held-back partial line once the stream has ended.
func (f *pgidFilter) flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.partial) > 0 {
		f.w.Write(f.partial)
		f.partial = nil
	}
}

// PGID is the process group ID the wrapper reported, 0 if none yet.
func (f *pgidFilter) PGID() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pgid
}

// mayBeMarker reports whether a line begun with b can still turn out to be the marker.
func mayBeMarker(b []byte) bool {
	if len(b) <= len(pgidMarker) {
		return strings.HasPrefix(pgidMarker, string(b))
	}
	if !bytes.HasPrefix(b, []byte(pgidMarker)) || len(b) > len(pgidMarker)+10 {
		return false
	}
	for _, c := range b[len(pgidMarker):] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// parseMarker reads the process group ID out of a marker line.
func parseMarker(line []byte) (int, bool) {
	digits, ok := bytes.CutPrefix(bytes.TrimSuffix(line, []byte("\n")), []byte(pgidMarker))
	if !ok {
		return 0, false
	}
	pgid, err := strconv.Atoi(string(digits))
	// A group ID of 1 or less would make "kill -TERM -1" signal every process.
	if err != nil || pgid <= 1 || strconv.Itoa(pgid) != string(digits) {
		return 0, false
	}
	return pgid, true
}

// Run runs cmd on the host and returns its output. A non-zero exit is an
// *ExitError; a timeout matches ErrTimeout and context.DeadlineExceeded;
// cancelling ctx stops the remote command and every process it started.
func (c *Client) Run(ctx context.Context, cmd Command) (Result, error) {
	red := newRedactor(cmd.Secrets)
	shown := red.String(cmd.Cmd)
	res, err := c.run(ctx, c.command(cmd.Cmd), shown, cmd, red)
	return res, hostErr(c.cfg.Host, err)
}

func (c *Client) run(ctx context.Context, rc remoteCommand, shown string, cmd Command, red redactor) (Result, error) {
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
	var group *pgidFilter
	if rc.grouped {
		group = newPGIDFilter(stderr)
		sess.Stderr = group
	}
	if cmd.Stdin != nil {
		sess.Stdin = cmd.Stdin
	}
	if err := sess.Start(rc.line); err != nil {
		return Result{}, red.Error(fmt.Errorf("run %q: start: %w", shown, err))
	}
	var waitErr error
	waited := make(chan struct{})
	go func() { waitErr = sess.Wait(); close(waited) }()

	select {
	case <-waited:
		err = waitErr
	case <-ctx.Done():
		// Closing the channel alone does not stop a command that has no
		// terminal: sshd just closes its pipes. The signal request is
		// refused for root logins and reaches only the login shell or sudo
		// otherwise; stopGroup is what stops the command.
		_ = sess.Signal(ssh.SIGTERM)
		stopErr := c.stopGroup(ctx, group, waited, shown)
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
		err = errors.Join(fmt.Errorf("run %q: %w", shown, err), stopErr)
	}
	if group != nil {
		group.flush()
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

// stopGroup stops a cancelled grouped command: it waits (briefly) for the
// command's process group ID, then runs killGroupScript in a second session
// on the same connection, as root. It returns an error only when the
// command may still be running.
func (c *Client) stopGroup(ctx context.Context, group *pgidFilter, waited <-chan struct{}, shown string) error {
	if group == nil {
		return nil
	}
	select {
	case <-group.found:
	case <-waited:
		return nil // ended on its own; its group ID may already be someone else's
	case <-time.After(markerWait):
		return fmt.Errorf("stop %q: it never reported its process group; it may still be running", shown)
	}
	select {
	case <-waited:
		return nil
	default:
	}
	pgid := group.PGID()
	script := killGroupScript(pgid)
	// The caller's context is done; the stop gets its own bound.
	res, err := c.run(context.WithoutCancel(ctx), remoteCommand{line: c.wrap(script)}, script,
		Command{Timeout: killGroupTimeout}, redactor{})
	if err != nil {
		c.log.Warn("could not stop a cancelled command", "cmd", shown, "pgid", pgid, "err", err)
		return fmt.Errorf("stop %q (process group %d): %w", shown, pgid, err)
	}
	if strings.TrimSpace(string(res.Stdout)) == "killed" {
		c.log.Warn("cancelled command ignored SIGTERM and was killed", "cmd", shown, "pgid", pgid, "grace", killGroupGrace)
	} else {
		c.log.Debug("stopped cancelled command", "cmd", shown, "pgid", pgid)
	}
	return nil
}

// probeSudo checks once per connection that sudo works without a password,
// so that a missing sudoers rule fails the host up front with instructions
// rather than at some later step.
func (c *Client) probeSudo(ctx context.Context) error {
	const probe = "sudo -n true"
	_, err := c.run(ctx, remoteCommand{line: probe}, probe, Command{Timeout: c.cfg.ConnectTimeout}, redactor{})
	var exit *ExitError
	if errors.As(err, &exit) {
		return &SudoError{User: c.cfg.User, Stderr: exit.Stderr}
	}
	if err != nil {
		return fmt.Errorf("sudo probe: %w", err)
	}
	return nil
}
