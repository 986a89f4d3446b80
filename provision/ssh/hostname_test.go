package ssh

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

func TestCheckKnownHostsPattern(t *testing.T) {
	good := []string{
		"10.0.0.5", "[10.0.0.5]:2222", "2001:db8::1", "[2001:db8::1]:2200", "fe80::1%eth0", "[fe80::1%eth0]:22",
		"cp-1", "cp-1.example.internal", "xn--bcher-kva.example", "1.example", "[localhost]:2223",
	}
	bad := []string{
		"", "cp 1", "cp\t1", "cp-1\n* ssh-ed25519 AAAA", "a,b", "*", "*.example", "cp-?", "!cp-1", "|1|abc|def",
		"cp#1", "cp_1", "-cp", "cp-", "cp..example", "192.0.2.011", "3221225995", "1.2.3", "fe80::1%lo\nx",
		"fe80::1%e th0", "[cp-1]", "[cp-1]:", "[cp-1]:0", "[cp-1]:65536", "[cp-1]:022", "[cp-1]:22x", "[a,b]:22",
		"cp-1\x00", strings.Repeat("a", 64) + ".example", strings.Repeat("a.", 127) + "aa",
	}
	for _, p := range good {
		if err := checkKnownHostsPattern(p); err != nil {
			t.Errorf("%q refused: %v", p, err)
		}
	}
	for _, p := range bad {
		if err := checkKnownHostsPattern(p); err == nil {
			t.Errorf("%q accepted", p)
		}
	}
}

// The known_hosts writer refuses any pattern that is not a plain host or
// [host]:port, even when the address reached it without Resolve's check.
func TestAcceptNewWritesOnlyPlainPatterns(t *testing.T) {
	attacker := newSigner(t).PublicKey()
	injected := "* " + string(bytes.TrimSpace(ssh.MarshalAuthorizedKey(attacker))) + " x"
	key := newSigner(t).PublicKey()
	for _, addr := range []string{
		"::1%lo\n" + injected, // the example: a newline hidden in an IPv6 zone
		"cp-1\n" + injected,
		"cp-1,*",
		"cp-1 x",
		"*",
		"192.0.2.011",
	} {
		t.Run(strconv.Quote(addr), func(t *testing.T) {
			kh := filepath.Join(t.TempDir(), "known_hosts")
			v, err := newHostKeyVerifier(Config{Host: "cp-1", Address: addr, Port: 22, KnownHostsFiles: []string{kh},
				HostKeyPolicy: PolicyAcceptNew}, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = v.check("", probeAddr, key)
			if !errors.Is(err, ErrHostKeyUnknown) || !strings.Contains(err.Error(), "fix the host's address") {
				t.Errorf("err = %v, want ErrHostKeyUnknown saying to fix the address", err)
			} else if strings.ContainsAny(err.Error(), "\n\x00") {
				t.Errorf("error carries the raw address: %q", err)
			}
			if data, err := os.ReadFile(kh); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("known_hosts written:\n%s", data)
			}
		})
	}
	// The same writer still records a plain host and [host]:port.
	for addr, want := range map[string]string{"cp-1.example": "cp-1.example", "10.0.0.5:2222": "[10.0.0.5]:2222"} {
		kh := filepath.Join(t.TempDir(), "known_hosts")
		host, port, _ := net.SplitHostPort(addr + ":22")
		if h, p, err := net.SplitHostPort(addr); err == nil {
			host, port = h, p
		}
		n, _ := strconv.Atoi(port)
		v, _ := newHostKeyVerifier(Config{Host: "cp-1", Address: host, Port: n, KnownHostsFiles: []string{kh}, HostKeyPolicy: PolicyAcceptNew}, nil)
		if err := v.check("", probeAddr, key); err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		if data, _ := os.ReadFile(kh); strings.TrimSpace(string(data)) != knownhosts.Line([]string{want}, key) {
			t.Errorf("%s: recorded %q", addr, data)
		}
	}
}

// End to end: an address that smuggles a known_hosts line through an IPv6
// zone (which Go's dialer ignores) is refused before anything is dialled or
// written, so no host comes to trust the attacker's key.
func TestKnownHostsInjectionThroughAddress(t *testing.T) {
	id := newIdentity(t)
	s := newFakeServerAt(t, "[::1]:0", id.pub).start()
	attacker := newSigner(t).PublicKey()
	addr := "::1%lo\n* " + string(bytes.TrimSpace(ssh.MarshalAuthorizedKey(attacker))) + " x"
	kh := filepath.Join(t.TempDir(), "known_hosts")
	cfg := s.hostConfig("cp-1", id, kh)
	cfg.Address = addr
	cfg.HostKeyPolicy = PolicyAcceptNew
	p, _ := newPool(t, Options{})
	_, err := p.Connect(ctxT(t), cfg)
	if err == nil || !strings.HasPrefix(err.Error(), "cp-1: ") || !strings.Contains(err.Error(), "is not an interface name; fix the address in the inventory") {
		t.Errorf("err = %v, want the address refused, naming cp-1", err)
	}
	if n := s.conns.Load(); n != 0 {
		t.Errorf("dialled the host %d times", n)
	}
	if data, err := os.ReadFile(kh); err == nil {
		db, _ := knownhosts.New(kh)
		if db != nil && db("evil.example:22", probeAddr, attacker) == nil {
			t.Fatalf("known_hosts now trusts the attacker's key for any host:\n%s", data)
		}
		t.Errorf("known_hosts written:\n%s", data)
	}
}

// OpenSSH matches host names case-insensitively; so does kprov, for lookups
// and for what accept-new records.
func TestHostNameCase(t *testing.T) {
	id := newIdentity(t)
	s := newFakeServer(t, id.pub).start()
	hk := s.hostKeys[0].PublicKey()
	recorded := func(key ssh.PublicKey) string {
		return knownhosts.Line([]string{knownhosts.Normalize(net.JoinHostPort("localhost", strconv.Itoa(s.port)))}, key)
	}
	t.Run("changed key under another spelling is refused", func(t *testing.T) {
		other := newSigner(t).PublicKey()
		kh := knownHosts(t, recorded(other))
		before, _ := os.ReadFile(kh)
		cfg := s.hostConfig("cp-1", id, kh)
		cfg.Address, cfg.HostKeyPolicy = "LocalHost", PolicyAcceptNew
		p, _ := newPool(t, Options{})
		_, err := p.Connect(ctxT(t), cfg)
		if !errors.Is(err, ErrHostKeyMismatch) || !strings.Contains(err.Error(), ssh.FingerprintSHA256(other)) {
			t.Errorf("err = %v, want a mismatch against the key recorded for [localhost]", err)
		}
		if after, _ := os.ReadFile(kh); !bytes.Equal(before, after) {
			t.Errorf("known_hosts changed:\n%s", after)
		}
	})
	t.Run("recorded key found under another spelling", func(t *testing.T) {
		hashed := knownhosts.Line([]string{knownhosts.HashHostname(knownhosts.Normalize(net.JoinHostPort("localhost", strconv.Itoa(s.port))))}, hk)
		for _, line := range []string{recorded(hk), hashed} {
			cfg := s.hostConfig("cp-1", id, knownHosts(t, line))
			cfg.Address = "LOCALHOST"
			p, _ := newPool(t, Options{})
			connectOK(t, p, cfg)
		}
	})
	t.Run("accept-new records the lower-case name", func(t *testing.T) {
		kh := filepath.Join(t.TempDir(), "known_hosts")
		cfg := s.hostConfig("cp-1", id, kh)
		cfg.Address, cfg.HostKeyPolicy = "LocalHost", PolicyAcceptNew
		p, _ := newPool(t, Options{})
		connectOK(t, p, cfg)
		if data, _ := os.ReadFile(kh); strings.TrimSpace(string(data)) != recorded(hk) {
			t.Errorf("recorded %q, want %q", data, recorded(hk))
		}
	})
}
