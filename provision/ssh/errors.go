package ssh

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors classify transport failures so that callers (and the retry
// loop) can decide with errors.Is instead of matching message text.
var (
	// ErrHostKeyUnknown means no known_hosts entry or pinned key covers the host.
	ErrHostKeyUnknown = errors.New("host key unknown")
	// ErrHostKeyMismatch means the host offered a key other than the one recorded for it.
	ErrHostKeyMismatch = errors.New("host key mismatch")
	// ErrHostKeyRevoked means the offered key (or its signing CA) is marked @revoked.
	ErrHostKeyRevoked = errors.New("host key revoked")
	// ErrAuthFailed means the server refused every credential we offered.
	ErrAuthFailed = errors.New("authentication failed")
	// ErrKeyFile means a private key or certificate file could not be used.
	ErrKeyFile = errors.New("unusable key file")
	// ErrSudo means the login user cannot run sudo without a password.
	ErrSudo = errors.New("passwordless sudo unavailable")
	// ErrTimeout means a connection attempt or command exceeded its time limit.
	ErrTimeout = errors.New("timed out")
)

// HostError attaches the inventory host name to an error; ForEach uses it to
// avoid prefixing a host twice and the failure table uses it to find the host.
type HostError struct {
	Host string
	Err  error
}

// Error renders "host: cause".
func (e *HostError) Error() string { return e.Host + ": " + e.Err.Error() }

// Unwrap exposes the cause to errors.Is and errors.As.
func (e *HostError) Unwrap() error { return e.Err }

// hostErr wraps err with the host name unless it already carries it.
func hostErr(host string, err error) error {
	if err == nil {
		return nil
	}
	var he *HostError
	if errors.As(err, &he) && he.Host == host {
		return err
	}
	return &HostError{Host: host, Err: err}
}

// KnownKey is one recorded key a host was expected to present, with the place
// it was recorded so the operator knows which line to fix.
type KnownKey struct {
	Type        string
	Fingerprint string // SHA256:...
	File        string // known_hosts file, or "inventory host_key" for a pinned key
	Line        int    // 0 for a pinned key
}

// String renders the key as "ssh-ed25519 SHA256:... (file:line)".
func (k KnownKey) String() string {
	if k.Line == 0 {
		return fmt.Sprintf("%s %s (%s)", k.Type, k.Fingerprint, k.File)
	}
	return fmt.Sprintf("%s %s (%s:%d)", k.Type, k.Fingerprint, k.File, k.Line)
}

// HostKeyError reports a host key that failed verification. It matches
// ErrHostKeyUnknown, ErrHostKeyMismatch or ErrHostKeyRevoked with errors.Is.
// It is never retried: a changed key is exactly what an attacker in the middle
// looks like, and retrying would only give them more chances.
type HostKeyError struct {
	Kind               error // one of the ErrHostKey* sentinels
	Address            string
	OfferedType        string
	OfferedFingerprint string
	Known              []KnownKey // expected keys (mismatch) or the revoking line
}

// Is makes errors.Is(err, ErrHostKeyMismatch) and friends work.
func (e *HostKeyError) Is(target error) bool { return target == e.Kind }

// Error explains what was offered, what was expected and where to fix it.
func (e *HostKeyError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s for %s: server offered %s %s", e.Kind, e.Address, e.OfferedType, e.OfferedFingerprint)
	switch e.Kind {
	case ErrHostKeyMismatch:
		b.WriteString("; expected ")
		for i, k := range e.Known {
			if i > 0 {
				b.WriteString(" or ")
			}
			b.WriteString(k.String())
		}
		b.WriteString("; if the host was reinstalled, verify the new key out of band and remove the old line")
		if f := e.fileToFix(); f != "" {
			fmt.Fprintf(&b, " (ssh-keygen -R %s -f %s)", keygenHost(e.Address), f)
		}
	case ErrHostKeyRevoked:
		for _, k := range e.Known {
			fmt.Fprintf(&b, "; revoked by %s:%d", k.File, k.Line)
		}
	case ErrHostKeyUnknown:
		b.WriteString("; add its key to known_hosts after checking it out of band, pin it with host_key, or set host_key_policy = \"accept-new\"")
	}
	return b.String()
}

func (e *HostKeyError) fileToFix() string {
	for _, k := range e.Known {
		if k.Line > 0 {
			return k.File
		}
	}
	return ""
}

// keygenHost renders an address the way ssh-keygen -R expects it: bare host
// for port 22, [host]:port otherwise.
func keygenHost(address string) string {
	if h, ok := strings.CutSuffix(address, ":22"); ok {
		return h
	}
	i := strings.LastIndex(address, ":")
	if i < 0 {
		return address
	}
	return "'[" + strings.Trim(address[:i], "[]") + "]" + address[i:] + "'"
}

// ExitError reports a remote command that ran and exited unsuccessfully.
// Command and Stderr are already redacted.
type ExitError struct {
	Command string
	Status  int
	Signal  string
	Stderr  string
}

// Error renders the command, its status and the tail of its stderr.
func (e *ExitError) Error() string {
	var how string
	if e.Signal != "" {
		how = "killed by signal " + e.Signal
	} else {
		how = fmt.Sprintf("exit status %d", e.Status)
	}
	msg := fmt.Sprintf("run %q: %s", e.Command, how)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + lastLines(s, 5)
	}
	return msg
}

// lastLines keeps the end of a long stderr, where the reason usually is.
func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// noKeysError is an authentication failure decided before dialing: there is
// no key to offer, which no retry can change. It matches ErrAuthFailed.
type noKeysError struct{}

func (noKeysError) Error() string {
	return ErrAuthFailed.Error() + ": no identity_file and no ssh-agent keys to offer"
}

// Is makes errors.Is(err, ErrAuthFailed) work.
func (noKeysError) Is(target error) bool { return target == ErrAuthFailed }

// SudoError explains that the login user cannot use sudo non-interactively and
// how to fix it; it matches ErrSudo.
type SudoError struct {
	User   string
	Stderr string
}

// Is makes errors.Is(err, ErrSudo) work.
func (e *SudoError) Is(target error) bool { return target == ErrSudo }

// Error names the user and the sudoers line that would fix it.
func (e *SudoError) Error() string {
	msg := fmt.Sprintf("user %q cannot run \"sudo -n true\"", e.User)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += " (" + lastLines(s, 2) + ")"
	}
	return msg + fmt.Sprintf("; kprov needs passwordless sudo: run \"visudo -f /etc/sudoers.d/kprov\" on the host and add \"%s ALL=(ALL) NOPASSWD: ALL\", or log in as root", e.User)
}
