package ssh

import (
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/charmbracelet/log"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// logBuffer collects log output from concurrent goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newPool(t testing.TB, opts Options) (*Pool, *logBuffer) {
	t.Helper()
	lb := &logBuffer{}
	if opts.Logger == nil {
		opts.Logger = log.NewWithOptions(lb, log.Options{Level: log.DebugLevel})
	}
	p := NewPool(opts)
	t.Cleanup(func() { p.Close() })
	return p, lb
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func connectOK(t *testing.T, p *Pool, cfg Config) *Client {
	t.Helper()
	c, err := p.Connect(ctxT(t), cfg)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	return c
}

func TestHostKeyKnown(t *testing.T) {
	id := newIdentity(t)
	s := newFakeServer(t, id.pub).start()
	hk := s.hostKeys[0].PublicKey()
	for name, line := range map[string]string{
		"plain":  s.knownLine(hk),
		"hashed": knownhosts.Line([]string{knownhosts.HashHostname(knownhosts.Normalize(s.addr))}, hk),
	} {
		t.Run(name, func(t *testing.T) {
			p, _ := newPool(t, Options{})
			connectOK(t, p, s.hostConfig("cp-1", id, knownHosts(t, line)))
		})
	}
}

func TestHostKeyUnknownStrictRefuses(t *testing.T) {
	id := newIdentity(t)
	s := newFakeServer(t, id.pub).start()
	p, _ := newPool(t, Options{})
	kh := knownHosts(t, "# nothing yet")
	cfg := s.hostConfig("cp-1", id, kh)
	cfg.Attempts = 3
	cfg.RetryBackoff = time.Millisecond
	_, err := p.Connect(ctxT(t), cfg)
	if !errors.Is(err, ErrHostKeyUnknown) {
		t.Fatalf("err = %v, want ErrHostKeyUnknown", err)
	}
	if !strings.HasPrefix(err.Error(), "cp-1: ") || !strings.Contains(err.Error(), ssh.FingerprintSHA256(s.hostKeys[0].PublicKey())) {
		t.Errorf("error should name the host and the offered fingerprint: %v", err)
	}
	if n := s.conns.Load(); n != 1 {
		t.Errorf("host key failure retried: %d connections", n)
	}
	if data, _ := os.ReadFile(kh); strings.Contains(string(data), "ssh-ed25519") {
		t.Errorf("strict policy wrote to known_hosts:\n%s", data)
	}
}

func TestHostKeyAcceptNewRecordsAndLogs(t *testing.T) {
	id := newIdentity(t)
	s := newFakeServer(t, id.pub).start()
	p, logs := newPool(t, Options{})
	kh := t.TempDir() + "/sub/known_hosts" // does not exist yet
	cfg := s.hostConfig("cp-1", id, kh)
	cfg.HostKeyPolicy = PolicyAcceptNew
	connectOK(t, p, cfg)

	st, err := os.Stat(kh)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("known_hosts mode %o, want 600", st.Mode().Perm())
	}
	data, _ := os.ReadFile(kh)
	if want := s.knownLine(s.hostKeys[0].PublicKey()); strings.TrimSpace(string(data)) != want {
		t.Errorf("known_hosts = %q, want %q", data, want)
	}
	if fp := ssh.FingerprintSHA256(s.hostKeys[0].PublicKey()); !strings.Contains(logs.String(), fp) {
		t.Errorf("accept-new did not log the fingerprint %s:\n%s", fp, logs)
	}

	// The recorded key now satisfies strict checking.
	cfg.HostKeyPolicy = PolicyStrict
	p2, _ := newPool(t, Options{})
	connectOK(t, p2, cfg)
}

func TestHostKeyMismatchFailsWithFingerprintsAndLine(t *testing.T) {
	id := newIdentity(t)
	s := newFakeServer(t, id.pub).start()
	old := newSigner(t).PublicKey()
	kh := knownHosts(t, "# comment", "other.example ssh-ed25519 "+strings.Fields(s.knownLine(old))[2], s.knownLine(old))
	before, _ := os.ReadFile(kh)
	for _, policy := range []HostKeyPolicy{PolicyStrict, PolicyAcceptNew} {
		t.Run(string(policy), func(t *testing.T) {
			p, _ := newPool(t, Options{})
			cfg := s.hostConfig("cp-1", id, kh)
			cfg.HostKeyPolicy = policy
			cfg.Attempts = 5
			cfg.RetryBackoff = time.Millisecond
			start := s.conns.Load()
			_, err := p.Connect(ctxT(t), cfg)
			var hke *HostKeyError
			if !errors.As(err, &hke) || !errors.Is(err, ErrHostKeyMismatch) {
				t.Fatalf("err = %v, want a HostKeyError matching ErrHostKeyMismatch", err)
			}
			msg := err.Error()
			for _, want := range []string{
				ssh.FingerprintSHA256(old),
				ssh.FingerprintSHA256(s.hostKeys[0].PublicKey()),
				kh + ":3",
				"ssh-keygen -R",
			} {
				if !strings.Contains(msg, want) {
					t.Errorf("error lacks %q:\n%s", want, msg)
				}
			}
			if n := s.conns.Load() - start; n != 1 {
				t.Errorf("mismatch was retried: %d connections", n)
			}
			after, _ := os.ReadFile(kh)
			if !bytes.Equal(before, after) {
				t.Errorf("known_hosts changed:\n%s", after)
			}
		})
	}
}

func TestHostKeyRevoked(t *testing.T) {
	id := newIdentity(t)
	s := newFakeServer(t, id.pub).start()
	hk := s.hostKeys[0].PublicKey()
	kh := knownHosts(t, s.knownLine(hk), "@revoked * "+strings.Join(strings.Fields(s.knownLine(hk))[1:], " "))
	p, _ := newPool(t, Options{})
	_, err := p.Connect(ctxT(t), s.hostConfig("cp-1", id, kh))
	if !errors.Is(err, ErrHostKeyRevoked) || !strings.Contains(err.Error(), kh+":2") {
		t.Fatalf("err = %v, want ErrHostKeyRevoked naming %s:2", err, kh)
	}
}

// hostCertSigner returns a host certificate for principal signed by ca.
func hostCertSigner(t *testing.T, ca ssh.Signer, principal string) ssh.Signer {
	t.Helper()
	key := newSigner(t)
	cert := &ssh.Certificate{
		Key: key.PublicKey(), CertType: ssh.HostCert, KeyId: "host",
		ValidPrincipals: []string{principal},
		ValidAfter:      uint64(time.Now().Add(-time.Hour).Unix()),
		ValidBefore:     uint64(time.Now().Add(time.Hour).Unix()),
	}
	if err := cert.SignCert(cryptorand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	cs, err := ssh.NewCertSigner(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func TestHostKeyCertAuthority(t *testing.T) {
	id := newIdentity(t)
	ca := newSigner(t)
	caLine := func(s *fakeServer) string {
		return "@cert-authority " + knownhosts.Normalize(s.addr) + " " + string(bytes.TrimSpace(ssh.MarshalAuthorizedKey(ca.PublicKey())))
	}
	t.Run("trusted", func(t *testing.T) {
		s := newFakeServer(t, id.pub, hostCertSigner(t, ca, "127.0.0.1")).start()
		p, _ := newPool(t, Options{})
		connectOK(t, p, s.hostConfig("cp-1", id, knownHosts(t, caLine(s))))
	})
	t.Run("wrong principal", func(t *testing.T) {
		s := newFakeServer(t, id.pub, hostCertSigner(t, ca, "somewhere-else")).start()
		p, _ := newPool(t, Options{})
		_, err := p.Connect(ctxT(t), s.hostConfig("cp-1", id, knownHosts(t, caLine(s))))
		if !errors.Is(err, ErrHostKeyMismatch) {
			t.Fatalf("err = %v, want ErrHostKeyMismatch", err)
		}
	})
	t.Run("revoked CA", func(t *testing.T) {
		s := newFakeServer(t, id.pub, hostCertSigner(t, ca, "127.0.0.1")).start()
		p, _ := newPool(t, Options{})
		revoked := "@revoked * " + string(bytes.TrimSpace(ssh.MarshalAuthorizedKey(ca.PublicKey())))
		_, err := p.Connect(ctxT(t), s.hostConfig("cp-1", id, knownHosts(t, caLine(s), revoked)))
		if !errors.Is(err, ErrHostKeyRevoked) {
			t.Fatalf("err = %v, want ErrHostKeyRevoked", err)
		}
	})
}

// The server holds an ECDSA and an Ed25519 key; x/crypto prefers ECDSA.
// Only the Ed25519 key is recorded, so without restricting
// HostKeyAlgorithms the server would offer ECDSA and fail as a mismatch.
func TestHostKeyAlgorithmsRestrictedToKnownTypes(t *testing.T) {
	id := newIdentity(t)
	ed := newSigner(t)
	s := newFakeServer(t, id.pub, newECDSASigner(t), ed).start()
	p, _ := newPool(t, Options{})
	connectOK(t, p, s.hostConfig("cp-1", id, knownHosts(t, s.knownLine(ed.PublicKey()))))
}

func TestPinnedHostKey(t *testing.T) {
	id := newIdentity(t)
	s := newFakeServer(t, id.pub).start()
	pin := func(k ssh.PublicKey) string { return string(bytes.TrimSpace(ssh.MarshalAuthorizedKey(k))) }
	empty := knownHosts(t, "# none")

	cfg := s.hostConfig("cp-1", id, empty)
	cfg.HostKey = pin(s.hostKeys[0].PublicKey())
	p, _ := newPool(t, Options{})
	connectOK(t, p, cfg)

	cfg.HostKey = pin(newSigner(t).PublicKey())
	p2, _ := newPool(t, Options{})
	_, err := p2.Connect(ctxT(t), cfg)
	if !errors.Is(err, ErrHostKeyMismatch) || !strings.Contains(err.Error(), "inventory host_key") {
		t.Fatalf("err = %v, want a mismatch against the inventory host_key", err)
	}
}

// With no key to offer, a connection cannot authenticate however often it
// is tried: it fails at once, without dialing, and says it tried once.
func TestNoKeysIsNotRetried(t *testing.T) {
	s := newFakeServer(t, newIdentity(t).pub).start()
	p, _ := newPool(t, Options{})
	cfg := s.hostConfig("cp-1", clientIdentity{}, knownHosts(t))
	cfg.IdentityFiles = nil
	cfg.Attempts = 5
	cfg.RetryBackoff = time.Second
	start := time.Now()
	_, err := p.Connect(ctxT(t), cfg)
	if !errors.Is(err, ErrAuthFailed) || !strings.Contains(err.Error(), "no identity_file and no ssh-agent keys") {
		t.Fatalf("err = %v, want ErrAuthFailed naming the missing keys", err)
	}
	if strings.Contains(err.Error(), "attempts") || time.Since(start) > 500*time.Millisecond {
		t.Errorf("retried a connection that has no key to offer (%s): %v", time.Since(start), err)
	}
	if n := s.conns.Load(); n != 0 {
		t.Errorf("dialed %d times with no key to offer", n)
	}
}
