package ssh

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/charmbracelet/log"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// hostKeyVerifier decides whether one hop's host key is trusted. It is built
// fresh for every connection attempt so that a key recorded by accept-new a
// moment ago (or an operator's edit) is seen.
//
// The order of checks matters: revocation first (a revoked key must fail
// even if some other line also lists it), then a pinned key, then the
// known_hosts files through x/crypto's knownhosts, which also handles hashed
// host names and @cert-authority lines.
type hostKeyVerifier struct {
	cfg     Config
	logger  *log.Logger
	files   []string // known_hosts files that exist, in the configured order
	lines   map[string][]string
	revoked map[string]KnownKey // marshalled key -> the @revoked line
	pinned  ssh.PublicKey
	db      ssh.HostKeyCallback // nil when no known_hosts file exists
}

func newHostKeyVerifier(cfg Config, logger *log.Logger) (*hostKeyVerifier, error) {
	v := &hostKeyVerifier{
		cfg:     cfg,
		logger:  logger,
		lines:   map[string][]string{},
		revoked: map[string]KnownKey{},
	}
	if cfg.HostKey != "" {
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(cfg.HostKey))
		if err != nil {
			return nil, fmt.Errorf("host_key: %w", err)
		}
		v.pinned = k
	}
	for _, f := range cfg.KnownHostsFiles {
		data, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			// A missing file holds no keys (the global file often does not
			// exist); an unreadable one is an error, because silently
			// skipping it could skip its @revoked lines.
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("known_hosts: %w", err)
		}
		v.files = append(v.files, f)
		v.lines[f] = strings.Split(string(data), "\n")
		v.readRevoked(f)
	}
	if len(v.files) > 0 {
		db, err := knownhosts.New(v.files...)
		if err != nil {
			return nil, fmt.Errorf("known_hosts: %w", err)
		}
		v.db = db
	}
	return v, nil
}

// readRevoked collects @revoked lines ourselves so that a revocation error
// can name its file and line, and so that revocation also applies to a
// pinned host_key.
func (v *hostKeyVerifier) readRevoked(file string) {
	for i, line := range v.lines[file] {
		fields := strings.Fields(line)
		if len(fields) < 4 || fields[0] != "@revoked" {
			continue
		}
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(strings.Join(fields[2:], " ")))
		if err != nil {
			continue
		}
		v.revoked[string(k.Marshal())] = KnownKey{Type: k.Type(), Fingerprint: ssh.FingerprintSHA256(k), File: file, Line: i + 1}
	}
}

// isCertAuthorityLine reports whether a knownhosts match came from an
// @cert-authority line; knownhosts reports those in KeyError.Want too.
func (v *hostKeyVerifier) isCertAuthorityLine(file string, line int) bool {
	lines := v.lines[file]
	if line < 1 || line > len(lines) {
		return false
	}
	return strings.HasPrefix(strings.TrimSpace(lines[line-1]), "@cert-authority")
}

// known returns the keys recorded for this host. knownhosts has no lookup
// function, so we ask it to verify a throwaway key that cannot match: the
// resulting KeyError lists every line that matches the host.
func (v *hostKeyVerifier) known() (plain []knownhosts.KnownKey, ca bool) {
	if v.db == nil {
		return nil, false
	}
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, false
	}
	probe, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, false
	}
	err = v.db(v.cfg.hostport(), probeAddr, probe)
	var ke *knownhosts.KeyError
	if !errors.As(err, &ke) {
		return nil, false
	}
	for _, k := range ke.Want {
		if v.isCertAuthorityLine(k.Filename, k.Line) {
			ca = true
			continue
		}
		plain = append(plain, k)
	}
	return plain, ca
}

// probeAddr stands in for the remote address when probing knownhosts; the
// host name passed alongside it takes precedence in the lookup.
var probeAddr net.Addr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 22}

// HostKeyAlgorithms restricts what the server may offer to the key types we
// already know for it. Without this a server (or an attacker) could offer a
// key type we have no record of, and a strict check would then depend on how
// an unknown type is classified rather than on a comparison.
func (v *hostKeyVerifier) hostKeyAlgorithms() []string {
	if v.pinned != nil {
		return algorithmsForKeyType(v.pinned.Type())
	}
	plain, ca := v.known()
	var algos []string
	if ca {
		algos = append(algos, certAlgorithms()...)
	}
	for _, k := range plain {
		for _, a := range algorithmsForKeyType(k.Key.Type()) {
			if !slices.Contains(algos, a) {
				algos = append(algos, a)
			}
		}
	}
	if len(algos) == 0 {
		// Nothing recorded: strict will refuse whatever comes, accept-new
		// will record it. Plain keys only, so what gets recorded is a host
		// key and not a certificate that expires.
		return plainAlgorithms()
	}
	return algos
}

// algorithmsForKeyType maps a key type to the signature algorithms a server
// may use with it (an RSA key signs with SHA-2 algorithms).
func algorithmsForKeyType(t string) []string {
	if t == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
	}
	return []string{t}
}

func certAlgorithms() []string {
	return slices.DeleteFunc(slices.Clone(ssh.SupportedAlgorithms().HostKeys), func(a string) bool {
		return !strings.Contains(a, "-cert-v01@openssh.com")
	})
}

func plainAlgorithms() []string {
	return slices.DeleteFunc(slices.Clone(ssh.SupportedAlgorithms().HostKeys), func(a string) bool {
		return strings.Contains(a, "-cert-v01@openssh.com")
	})
}

// check is the ssh.HostKeyCallback for this hop.
func (v *hostKeyVerifier) check(hostname string, remote net.Addr, key ssh.PublicKey) error {
	addr := v.cfg.hostport()
	offered := key
	if cert, ok := key.(*ssh.Certificate); ok {
		offered = cert.Key
		if rk, bad := v.revoked[string(cert.SignatureKey.Marshal())]; bad {
			return v.keyError(ErrHostKeyRevoked, key, rk)
		}
	}
	if rk, bad := v.revoked[string(offered.Marshal())]; bad {
		return v.keyError(ErrHostKeyRevoked, key, rk)
	}

	if v.pinned != nil {
		// A pinned key is the whole truth for this host: known_hosts is not
		// consulted and accept-new does not apply.
		if bytes.Equal(v.pinned.Marshal(), key.Marshal()) {
			return nil
		}
		return v.keyError(ErrHostKeyMismatch, key, KnownKey{
			Type: v.pinned.Type(), Fingerprint: ssh.FingerprintSHA256(v.pinned), File: "inventory host_key",
		})
	}

	var err error
	if v.db != nil {
		err = v.db(addr, remote, key)
	} else {
		err = &knownhosts.KeyError{}
	}
	if err == nil {
		return nil
	}
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case errors.As(err, &re):
		return v.keyError(ErrHostKeyRevoked, key, toKnownKey(re.Revoked))
	case errors.As(err, &ke) && len(ke.Want) == 0:
		if v.cfg.HostKeyPolicy == PolicyAcceptNew {
			return v.acceptNew(key)
		}
		return v.keyError(ErrHostKeyUnknown, key)
	case errors.As(err, &ke):
		want := make([]KnownKey, 0, len(ke.Want))
		for _, k := range ke.Want {
			want = append(want, toKnownKey(k))
		}
		return v.keyError(ErrHostKeyMismatch, key, want...)
	default:
		// Certificate failures (unknown CA, wrong principal, expired): the
		// host offered a certificate we asked for and it did not verify,
		// which is as serious as a changed key.
		he := v.keyError(ErrHostKeyMismatch, key)
		return fmt.Errorf("%w: %v", he, err)
	}
}

func toKnownKey(k knownhosts.KnownKey) KnownKey {
	return KnownKey{Type: k.Key.Type(), Fingerprint: ssh.FingerprintSHA256(k.Key), File: k.Filename, Line: k.Line}
}

func (v *hostKeyVerifier) keyError(kind error, key ssh.PublicKey, known ...KnownKey) *HostKeyError {
	return &HostKeyError{
		Kind:               kind,
		Address:            v.cfg.hostport(),
		OfferedType:        key.Type(),
		OfferedFingerprint: ssh.FingerprintSHA256(key),
		Known:              known,
	}
}

// acceptNew records an unknown host's key in the first known_hosts file. It
// only ever appends, and it is reached only when no line at all matches the
// host, so a changed key can never be written over a recorded one.
func (v *hostKeyVerifier) acceptNew(key ssh.PublicKey) error {
	if len(v.cfg.KnownHostsFiles) == 0 {
		return fmt.Errorf("%w: accept-new needs a known_hosts file to record %s in", v.keyError(ErrHostKeyUnknown, key), ssh.FingerprintSHA256(key))
	}
	file := v.cfg.KnownHostsFiles[0]
	// The pattern is checked here, at the only place kprov writes
	// known_hosts, whatever validated the address before: one stray
	// newline, space or comma in it would add a line or a pattern of the
	// attacker's choosing, such as "* ssh-ed25519 AAAA...", that every host
	// (for OpenSSH too) would then trust.
	pattern := knownhosts.Normalize(v.cfg.hostport())
	if err := checkKnownHostsPattern(pattern); err != nil {
		return fmt.Errorf("%w for %s: not recording %s %s in %s: %v; known_hosts only ever gets a plain host or [host]:port, so fix the host's address",
			ErrHostKeyUnknown, strconv.Quote(pattern), key.Type(), ssh.FingerprintSHA256(key), file, err)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return fmt.Errorf("record host key: %w", err)
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("record host key: %w", err)
	}
	line := knownhosts.Line([]string{pattern}, key) + "\n"
	if needsNewline(file) {
		line = "\n" + line
	}
	// One write with O_APPEND, so hosts recorded concurrently by a fan-out
	// do not interleave within a line.
	_, werr := f.WriteString(line)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("record host key in %s: %w", file, err)
	}
	if v.logger != nil {
		v.logger.Warn("recorded new host key (accept-new)", "host", v.cfg.Host, "address", v.cfg.hostport(),
			"type", key.Type(), "fingerprint", ssh.FingerprintSHA256(key), "file", file)
	}
	return nil
}

// needsNewline reports whether file ends without a newline, so that an
// appended entry does not get glued onto the last line.
func needsNewline(file string) bool {
	f, err := os.Open(file)
	if err != nil {
		return false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return false
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, st.Size()-1); err != nil {
		return false
	}
	return b[0] != '\n'
}
