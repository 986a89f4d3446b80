package pki

import (
	"fmt"
	"io"
	"log/slog"
)

// redacted is what every printing and marshalling path shows instead of a Secret's value.
const redacted = "[redacted]"

// Secret is a string that must never reach a log, an error, a plan or a terminal.
//
// Every way Go prints or serialises a value (fmt verbs, encoding/json,
// encoding/text, log/slog and charmbracelet/log, which use these interfaces)
// yields "[redacted]"; only Reveal returns the value, so each place that
// really needs it (a file written to a host, a kubeadm configuration) is
// visible in review as a call to Reveal. One path is out of reach of any
// method: encoding/json writes map keys of a string kind verbatim, so a
// Secret must never be a map key.
type Secret string

// Reveal returns the secret's value; call it only where the value is written to its destination.
func (s Secret) Reveal() string { return string(s) }

// String returns "[redacted]", so %v and %s and loggers that use fmt.Stringer print no value.
func (s Secret) String() string { return redacted }

// GoString returns "[redacted]" for %#v.
func (s Secret) GoString() string { return redacted }

// Format prints "[redacted]" for every verb: without it %x and %q of a
// string type would print the value in hex or quoted form.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// MarshalJSON encodes a Secret as the JSON string "[redacted]", so a plan or a log in JSON never carries it.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText returns "[redacted]" for encoders that use encoding.TextMarshaler (logfmt, YAML, map keys).
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue makes log/slog handlers print "[redacted]".
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// IsZero reports whether the secret is empty, without revealing it.
func (s Secret) IsZero() bool { return s == "" }

var (
	_ fmt.Stringer   = Secret("")
	_ fmt.GoStringer = Secret("")
	_ fmt.Formatter  = Secret("")
	_ slog.LogValuer = Secret("")
)
