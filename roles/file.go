package roles

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"

	"github.com/kprov/kprov/provision/pki"
)

// File is one file to put on a host.
type File struct {
	Path    string      // absolute path on the host
	Mode    fs.FileMode // 0600 for anything holding a secret, 0644 otherwise
	Content []byte      // the exact bytes to write
	// Secret marks a private key or a file with a join secret in it (the
	// bootstrap token, the certificate key): never print Content, and upload
	// it 0600 from the first byte.
	Secret bool
	// Redacted is Content with every secret replaced by a placeholder: what
	// a reviewer may see. It equals Content for a file without secrets.
	Redacted []byte
	// Source says what produced the file: "pki", or the template's name.
	Source string
}

// Placeholders that replace secrets in File.Redacted.
const (
	RedactedBootstrapToken = "<redacted: bootstrap token>"
	RedactedCertificateKey = "<redacted: certificate key>"
	RedactedPrivateKey     = "<redacted: private key>\n"
)

// asPKI is the file as the PKI describes one, whose printing and logging
// already keep content out; File reuses them so both redact alike.
func (f File) asPKI() pki.File {
	return pki.File{Path: f.Path, Mode: f.Mode, Content: f.Content, Secret: f.Secret}
}

// SHA256 is the hex checksum of Content; the apply compares it with the host's file before uploading.
func (f File) SHA256() string { return f.asPKI().SHA256() }

// String describes the file without its content, which may hold a secret.
func (f File) String() string { return f.asPKI().String() }

// Format prints String for every verb, so %v and %+v of a File or a []File never dump a secret.
func (f File) Format(s fmt.State, _ rune) { _, _ = io.WriteString(s, f.String()) }

// LogValue logs the file's path, mode and checksum, never its content.
func (f File) LogValue() slog.Value { return f.asPKI().LogValue() }

// MarshalJSON carries the redacted content and the checksum of the real
// one, so a JSON plan may be shared and still shows every setting.
func (f File) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Path    string `json:"path"`
		Mode    string `json:"mode"`
		SHA256  string `json:"sha256"`
		Secret  bool   `json:"secret"`
		Source  string `json:"source"`
		Content string `json:"content"`
	}{f.Path, fmt.Sprintf("%04o", f.Mode.Perm()), f.SHA256(), f.Secret, f.Source, string(f.Redacted)})
}

var (
	_ fmt.Formatter  = File{}
	_ slog.LogValuer = File{}
	_ json.Marshaler = File{}
)
