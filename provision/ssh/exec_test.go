package ssh

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/kprov/kprov/internal/shell"
)

// trusted starts a fake server for id and returns a pool and config that
// trust it.
func trusted(t *testing.T, id clientIdentity) (*fakeServer, *Pool, *logBuffer, Config) {
	t.Helper()
	s := newFakeServer(t, id.pub).start()
	p, logs := newPool(t, Options{})
	return s, p, logs, s.hostConfig("cp-1", id, knownHosts(t, s.knownLine(s.hostKeys[0].PublicKey())))
}

func TestOneConnectionPerHost(t *testing.T) {
	id := newIdentity(t)
	s, p, _, cfg := trusted(t, id)
	s.expect("hostname", script("cp-1\n", "", 0))
	c := connectOK(t, p, cfg)
	for range 5 {
		res, err := c.Run(ctxT(t), Command{Cmd: "hostname"})
		if err != nil || string(res.Stdout) != "cp-1\n" {
			t.Fatalf("run = %q, %v", res.Stdout, err)
		}
	}
	if again := connectOK(t, p, cfg); again != c {
		t.Error("second Connect returned a new client")
	}
	if n := s.conns.Load(); n != 1 {
		t.Errorf("%d TCP connections for one host, want 1", n)
	}
}

func TestExitStatusAndBoundedOutput(t *testing.T) {
	id := newIdentity(t)
	s, p, _, cfg := trusted(t, id)
	s.expect("false", script("", "it broke\n", 3))
	s.expect("yes", script(strings.Repeat("y\n", 50000), "", 0))
	c := connectOK(t, p, cfg)

	_, err := c.Run(ctxT(t), Command{Cmd: "false"})
	var exit *ExitError
	if !errors.As(err, &exit) || exit.Status != 3 || !strings.Contains(err.Error(), "it broke") {
		t.Fatalf("err = %#v, want ExitError status 3 with stderr", err)
	}
	res, err := c.Run(ctxT(t), Command{Cmd: "yes", MaxOutput: 1000})
	if err != nil || len(res.Stdout) != 1000 || !res.Truncated {
		t.Fatalf("len(stdout) = %d, truncated = %v, err = %v; want 1000, true", len(res.Stdout), res.Truncated, err)
	}
}

func TestCommandTimeout(t *testing.T) {
	id := newIdentity(t)
	s, p, _, cfg := trusted(t, id)
	s.expect("sleep 30", shellHandler("sleep 30")).expectGroupKill(false)
	cfg.CommandTimeout = 200 * time.Millisecond
	c := connectOK(t, p, cfg)
	start := time.Now()
	_, err := c.Run(ctxT(t), Command{Cmd: "sleep 30"})
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("timeout took %s", d)
	}
}

// Cancelling the context must stop the remote command and its children,
// not just stop waiting for it, with the server refusing the signal request
// as OpenSSH does for root: a second session kills the command's process
// group, whose ID the wrapper reported on stderr (and the client took out).
func TestCancelKillsRemoteCommand(t *testing.T) {
	id := newIdentity(t)
	s, p, _, cfg := trusted(t, id)
	s.refuseSignals = true
	marker := filepath.Join(t.TempDir(), "finished")
	line := "echo started >&2; (sleep 2 && touch " + marker + ".child) & sleep 2 && touch " + marker
	killed := make(chan struct{})
	s.expect(line, func(in io.Reader, o, e io.Writer, sig <-chan string) int {
		status := shellHandler(line)(in, o, e, sig)
		close(killed)
		return status
	}).expectGroupKill(false)
	c := connectOK(t, p, cfg)
	ctx, cancel := context.WithCancel(ctxT(t))
	time.AfterFunc(200*time.Millisecond, cancel)
	res, err := c.Run(ctx, Command{Cmd: line})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	select {
	case <-killed:
	case <-time.After(1500 * time.Millisecond):
		t.Fatal("remote command kept running after cancellation")
	}
	if !slices.Contains(s.sessionRequests(), "signal") {
		t.Error("no signal request sent")
	}
	if !slices.ContainsFunc(s.commands(), func(c string) bool { return strings.HasPrefix(c, "kill -TERM -") }) {
		t.Errorf("no process group kill among %q", s.commands())
	}
	// After it, the shell that ran it may say "Terminated".
	if !strings.HasPrefix(string(res.Stderr), "started\n") || strings.Contains(string(res.Stderr), pgidMarker) {
		t.Errorf("stderr = %q, want the command's own line first and no process group marker", res.Stderr)
	}
	time.Sleep(2500 * time.Millisecond)
	for _, f := range []string{marker, marker + ".child"} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s exists: the remote command or its child ran to completion", f)
		}
	}
}

// The same through sudo -n, run for real (as root, sudo needs no rule): the
// command, its group kill and the wrapper all pass through sudo's sh.
func TestCancelThroughSudo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, for sudo -n to run without a sudoers rule")
	}
	if _, err := exec.LookPath("sudo"); err != nil {
		t.Skip("needs sudo")
	}
	id := newIdentity(t)
	s, p, _, cfg := trusted(t, id)
	cfg.User = "deploy"
	s.refuseSignals = true
	marker := filepath.Join(t.TempDir(), "finished")
	cmd := "sleep 2 && touch " + marker
	line := "sudo -n -- sh -c " + shell.Quote(groupWrap(cmd))
	s.expectRaw("sudo -n true", rawShell("sudo -n true")).expectRaw(line, rawShell(line)).expectGroupKill(true)
	c := connectOK(t, p, cfg)
	ctx, cancel := context.WithCancel(ctxT(t))
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	if _, err := c.Run(ctx, Command{Cmd: cmd}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	// The kill script waits until the group has vanished, zombies reaped;
	// this machine's init may take a second or two over the orphans.
	if d := time.Since(start); d > killGroupGrace {
		t.Errorf("cancellation took %s", d)
	}
	time.Sleep(2500 * time.Millisecond)
	if _, err := os.Stat(marker); err == nil {
		t.Error("the command ran to completion through sudo")
	}
}

func TestRedaction(t *testing.T) {
	id := newIdentity(t)
	s, p, logs, cfg := trusted(t, id)
	const token = "abcdef.0123456789abcdef"
	line := "kubeadm join --token " + token
	s.expect(line, script("", "bad token "+token+"\n", 1))
	var gotStdin []byte
	s.expect("cat > /etc/secret", func(in io.Reader, _, _ io.Writer, _ <-chan string) int {
		gotStdin, _ = io.ReadAll(in)
		return 5
	})
	c := connectOK(t, p, cfg)

	_, err := c.Run(ctxT(t), Command{Cmd: line, Secrets: []string{token}})
	if err == nil || strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), Redacted) {
		t.Errorf("error leaks or lacks redaction: %v", err)
	}
	var exit *ExitError
	if !errors.As(err, &exit) {
		t.Errorf("redaction lost the error type: %T", err)
	}
	_, err = c.Run(ctxT(t), Command{Cmd: "cat > /etc/secret", Stdin: strings.NewReader(token), Secrets: []string{token}})
	if string(gotStdin) != token || err == nil || strings.Contains(err.Error(), token) {
		t.Errorf("stdin = %q, err = %v", gotStdin, err)
	}
	for _, cmd := range s.commands() {
		if strings.Contains(cmd, token) && cmd != line {
			t.Errorf("secret sent on a command line it was not part of: %q", cmd)
		}
	}
	if strings.Contains(logs.String(), token) {
		t.Errorf("log leaks the secret:\n%s", logs)
	}
	if !strings.Contains(logs.String(), "kubeadm join --token "+Redacted) {
		t.Errorf("log lacks the redacted command:\n%s", logs)
	}
}

func TestSudo(t *testing.T) {
	id := newIdentity(t)
	t.Run("works", func(t *testing.T) {
		s, p, _, cfg := trusted(t, id)
		cfg.User = "deploy"
		s.expectRaw("sudo -n true", script("", "", 0))
		s.expectRaw("sudo -n -- sh -c "+shell.Quote(groupWrap("echo 'hi'")), script("hi\n", "", 0))
		c := connectOK(t, p, cfg)
		if res, err := c.Run(ctxT(t), Command{Cmd: "echo 'hi'"}); err != nil || string(res.Stdout) != "hi\n" {
			t.Fatalf("run = %q, %v", res.Stdout, err)
		}
		if cmds := s.commands(); len(cmds) != 2 {
			t.Errorf("commands = %q, want one probe and one command", cmds)
		}
	})
	t.Run("needs password", func(t *testing.T) {
		s, p, _, cfg := trusted(t, id)
		cfg.User = "deploy"
		s.expectRaw("sudo -n true", script("", "sudo: a password is required\n", 1))
		_, err := p.Connect(ctxT(t), cfg)
		if !errors.Is(err, ErrSudo) || !strings.Contains(err.Error(), "deploy ALL=(ALL) NOPASSWD: ALL") || !strings.Contains(err.Error(), "visudo") {
			t.Fatalf("err = %v, want ErrSudo with the sudoers fix", err)
		}
	})
	t.Run("root needs no sudo", func(t *testing.T) {
		s, p, _, cfg := trusted(t, id)
		s.expect("id -u", script("0\n", "", 0))
		c := connectOK(t, p, cfg)
		if _, err := c.Run(ctxT(t), Command{Cmd: "id -u"}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestUnreachableCostsOneWait: a host that does not answer fails with
// ErrTimeout, and an attempt that waited its whole connect timeout is not
// retried however many attempts are allowed (the server saw
// one connection), while a refused connection is retried up to the bound.
func TestUnreachableCostsOneWait(t *testing.T) {
	id := newIdentity(t)
	s := newFakeServer(t, id.pub)
	s.stall = true
	s.start()
	p, _ := newPool(t, Options{})
	cfg := s.hostConfig("cp-1", id, knownHosts(t, "# none"))
	cfg.ConnectTimeout, cfg.Attempts, cfg.RetryBackoff = 200*time.Millisecond, 5, time.Millisecond
	_, err := p.Connect(ctxT(t), cfg)
	if !errors.Is(err, ErrTimeout) || strings.Contains(err.Error(), "attempts") {
		t.Fatalf("err = %v, want ErrTimeout after one attempt", err)
	}
	if n := s.conns.Load(); n != 1 {
		t.Errorf("a host that did not answer in time got %d connections, want 1", n)
	}

	// A port nobody listens on refuses: retried, and the error says so.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().(*net.TCPAddr)
	l.Close()
	refused := cfg
	refused.Address, refused.Port, refused.Attempts = "127.0.0.1", addr.Port, 2
	_, err = p.Connect(ctxT(t), refused)
	if err == nil || !strings.Contains(err.Error(), "(2 attempts)") || !strings.Contains(err.Error(), "refused") {
		t.Errorf("err = %v, want a refused connection after 2 attempts", err)
	}
}

// A host that is still booting rejects our key until authorized_keys is in
// place; bounded retries with backoff get through, too few attempts fail
// with ErrAuthFailed.
func TestRetryAuthWhileBooting(t *testing.T) {
	id := newIdentity(t)
	for _, tc := range []struct {
		attempts int
		ok       bool
	}{{3, true}, {2, false}} {
		s, p, _, cfg := trusted(t, id)
		s.rejectN = 2
		cfg.Attempts = tc.attempts
		cfg.RetryBackoff = 10 * time.Millisecond
		_, err := p.Connect(ctxT(t), cfg)
		if tc.ok && err != nil {
			t.Errorf("attempts %d: %v", tc.attempts, err)
		}
		if !tc.ok && !errors.Is(err, ErrAuthFailed) {
			t.Errorf("attempts %d: err = %v, want ErrAuthFailed", tc.attempts, err)
		}
		if n := s.conns.Load(); int(n) != min(tc.attempts, 3) {
			t.Errorf("attempts %d: %d connections", tc.attempts, n)
		}
	}
}

func TestKeepAlive(t *testing.T) {
	id := newIdentity(t)
	s, p, _, cfg := trusted(t, id)
	s.expect("true", script("", "", 0))
	cfg.KeepAlive = 30 * time.Millisecond
	c := connectOK(t, p, cfg)
	time.Sleep(150 * time.Millisecond)
	if s.keepalives.Load() == 0 {
		t.Fatal("no keepalives sent")
	}
	// The host goes silent: the connection must be declared dead.
	s.ignoreGlobal.Store(true)
	done := make(chan struct{})
	go func() { c.conn.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("silent host not detected")
	}
	if _, err := c.Run(ctxT(t), Command{Cmd: "true"}); err == nil {
		t.Error("run on a dead connection succeeded")
	}
}

func TestAuthMethods(t *testing.T) {
	t.Run("agent, never forwarded", func(t *testing.T) {
		id := newIdentity(t)
		s := newFakeServer(t, id.pub).start()
		s.expect("true", script("", "", 0))
		keyring := agent.NewKeyring()
		if err := keyring.Add(agent.AddedKey{PrivateKey: id.priv}); err != nil {
			t.Fatal(err)
		}
		sock := serveAgent(t, keyring)
		p, _ := newPool(t, Options{AgentSocket: sock})
		cfg := s.hostConfig("cp-1", clientIdentity{}, knownHosts(t, s.knownLine(s.hostKeys[0].PublicKey())))
		cfg.IdentityFiles = nil
		c := connectOK(t, p, cfg)
		if _, err := c.Run(ctxT(t), Command{Cmd: "true"}); err != nil {
			t.Fatal(err)
		}
		if slices.Contains(s.sessionRequests(), "auth-agent-req@openssh.com") {
			t.Error("client requested agent forwarding")
		}
	})
	t.Run("key types", func(t *testing.T) {
		rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		ecKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		for name, priv := range map[string]any{"rsa": rsaKey, "ecdsa": ecKey} {
			signer := mustSigner(t, priv, nil)
			id := clientIdentity{file: writeKey(t, t.TempDir(), priv, ""), pub: signer.PublicKey()}
			_, p, _, cfg := trusted(t, id)
			if _, err := p.Connect(ctxT(t), cfg); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	})
	t.Run("encrypted key", func(t *testing.T) {
		base := newIdentity(t)
		file := writeKey(t, t.TempDir(), base.priv, "hunter2")
		id := clientIdentity{file: file, pub: base.pub}
		s := newFakeServer(t, id.pub).start()
		cfg := s.hostConfig("cp-1", id, knownHosts(t, s.knownLine(s.hostKeys[0].PublicKey())))

		p, _ := newPool(t, Options{})
		_, err := p.Connect(ctxT(t), cfg)
		if !errors.Is(err, ErrKeyFile) || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "encrypted") {
			t.Fatalf("err = %v, want ErrKeyFile naming %s", err, file)
		}
		asked := 0
		p2, _ := newPool(t, Options{Passphrase: func(f string) ([]byte, error) { asked++; return []byte("hunter2"), nil }})
		connectOK(t, p2, cfg)
		cfg.Host = "cp-2"
		connectOK(t, p2, cfg)
		if asked != 1 {
			t.Errorf("passphrase asked %d times, want once per run", asked)
		}
	})
	// As OpenSSH: a key file of ours that group or others may use is refused,
	// naming the host, the file and the chmod that fixes it, before any dial.
	t.Run("key file open to others", func(t *testing.T) {
		id := newIdentity(t)
		s := newFakeServer(t, id.pub).start()
		cfg := s.hostConfig("cp-1", id, knownHosts(t, s.knownLine(s.hostKeys[0].PublicKey())))
		cfg.Attempts, cfg.RetryBackoff = 3, time.Millisecond
		for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o620, 0o660, 0o601} {
			if err := os.Chmod(id.file, mode); err != nil {
				t.Fatal(err)
			}
			p, _ := newPool(t, Options{})
			_, err := p.Connect(ctxT(t), cfg)
			want := fmt.Sprintf("%s %s: mode %04o", ErrKeyFile, id.file, mode)
			if !errors.Is(err, ErrKeyFile) || !strings.HasPrefix(err.Error(), "cp-1: ") || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), `run "chmod 600 `+id.file+`"`) {
				t.Errorf("mode %04o: err = %v, want %q ... chmod 600", mode, err, want)
			}
		}
		if n := s.conns.Load(); n != 0 {
			t.Errorf("dialled %d times with an unprotected key", n)
		}
		for _, mode := range []os.FileMode{0o600, 0o400, 0o700} {
			os.Chmod(id.file, mode)
			p, _ := newPool(t, Options{})
			connectOK(t, p, cfg)
		}
		// A path that needs quoting is quoted in the advice.
		odd := filepath.Join(t.TempDir(), "my key")
		data, _ := os.ReadFile(id.file)
		os.WriteFile(odd, data, 0o644)
		cfg.IdentityFiles = []string{odd}
		p, _ := newPool(t, Options{})
		if _, err := p.Connect(ctxT(t), cfg); err == nil || !strings.Contains(err.Error(), `run "chmod 600 '`+odd+`'"`) {
			t.Errorf("err = %v, want the path quoted", err)
		}
	})
	t.Run("certificate", func(t *testing.T) {
		userCA := newSigner(t)
		id := newIdentity(t)
		cert := &ssh.Certificate{Key: id.pub, CertType: ssh.UserCert, KeyId: "kprov", ValidPrincipals: []string{"root"},
			ValidBefore: ssh.CertTimeInfinity}
		if err := cert.SignCert(rand.Reader, userCA); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(id.file+"-cert.pub", ssh.MarshalAuthorizedKey(cert), 0o644); err != nil {
			t.Fatal(err)
		}
		s := newFakeServer(t, nil) // only the CA is trusted, not the bare key
		s.userCA = userCA.PublicKey()
		s.start()
		p, _ := newPool(t, Options{})
		connectOK(t, p, s.hostConfig("cp-1", id, knownHosts(t, s.knownLine(s.hostKeys[0].PublicKey()))))
	})
}

func serveAgent(t *testing.T, kr agent.Agent) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); agent.ServeAgent(kr, c) }()
		}
	}()
	return sock
}

func TestBastionChain(t *testing.T) {
	id := newIdentity(t)
	b1 := newFakeServer(t, id.pub).start()
	b2 := newFakeServer(t, id.pub).start()
	target := newFakeServer(t, id.pub).start()
	target.expect("hostname", script("cp-1\n", "", 0))
	lines := []string{b1.knownLine(b1.hostKeys[0].PublicKey()), b2.knownLine(b2.hostKeys[0].PublicKey()), target.knownLine(target.hostKeys[0].PublicKey())}
	hop := func(s *fakeServer) Config {
		return Config{Host: "bastion", Address: "127.0.0.1", Port: s.port, User: "jump"}
	}
	t.Run("ok", func(t *testing.T) {
		p, _ := newPool(t, Options{})
		cfg := target.hostConfig("cp-1", id, knownHosts(t, lines...))
		cfg.Bastions = []Config{hop(b1), hop(b2)}
		c := connectOK(t, p, cfg)
		if res, err := c.Run(ctxT(t), Command{Cmd: "hostname"}); err != nil || string(res.Stdout) != "cp-1\n" {
			t.Fatalf("run = %q, %v", res.Stdout, err)
		}
		// Through the chain: b1 forwarded to b2, b2 forwarded to the target.
		if b1.forwards != 1 || b2.forwards != 1 {
			t.Errorf("forwards b1=%d b2=%d, want 1 each", b1.forwards, b2.forwards)
		}
		// A second host behind the same chain reuses the bastion connections.
		cfg2 := cfg
		cfg2.Host = "cp-2"
		connectOK(t, p, cfg2)
		if b1.conns.Load() != 1 || b2.conns.Load() != 1 {
			t.Errorf("bastion connections b1=%d b2=%d, want 1 each", b1.conns.Load(), b2.conns.Load())
		}
	})
	t.Run("bastion host key checked", func(t *testing.T) {
		p, _ := newPool(t, Options{})
		bad := slices.Clone(lines)
		bad[1] = b2.knownLine(newSigner(t).PublicKey())
		cfg := target.hostConfig("cp-1", id, knownHosts(t, bad...))
		cfg.Bastions = []Config{hop(b1), hop(b2)}
		_, err := p.Connect(ctxT(t), cfg)
		if !errors.Is(err, ErrHostKeyMismatch) || !strings.Contains(err.Error(), "bastion") {
			t.Fatalf("err = %v, want a bastion host key mismatch", err)
		}
	})
}

// A bastion connection is shared only by hosts that trust it the same way:
// a host never goes through a bastion whose key was accepted under another
// host's known_hosts files, policy or pinned key.
func TestBastionSharedOnlyWithSameTrust(t *testing.T) {
	id := newIdentity(t)
	b := newFakeServer(t, id.pub).start()
	targets := map[string]*fakeServer{}
	for _, name := range []string{"a", "b", "c", "d"} {
		targets[name] = newFakeServer(t, id.pub).start()
	}
	line := func(s *fakeServer) string { return s.knownLine(s.hostKeys[0].PublicKey()) }
	hop := Config{Host: "bastion", Address: "127.0.0.1", Port: b.port, User: "jump"}
	p, _ := newPool(t, Options{})

	// a: accept-new with its own file, which now records the bastion's key.
	khA := filepath.Join(t.TempDir(), "known_hosts")
	a := targets["a"].hostConfig("a", id, khA)
	a.HostKeyPolicy = PolicyAcceptNew
	a.Bastions = []Config{hop}
	connectOK(t, p, a)

	// b: strict, and its known_hosts knows its own key but not the bastion's.
	bc := targets["b"].hostConfig("b", id, knownHosts(t, line(targets["b"])))
	bc.Bastions = []Config{hop}
	_, err := p.Connect(ctxT(t), bc)
	if !errors.Is(err, ErrHostKeyUnknown) || !strings.HasPrefix(err.Error(), "b: bastion ") {
		t.Errorf("strict host through a bastion only an accept-new host knows: err = %v, want its bastion's key unknown", err)
	}

	// c: its bastion hop pins a key the bastion does not have.
	cc := targets["c"].hostConfig("c", id, knownHosts(t, line(b), line(targets["c"])))
	pinned := hop
	pinned.HostKey = string(ssh.MarshalAuthorizedKey(newSigner(t).PublicKey()))
	cc.Bastions = []Config{pinned}
	if _, err := p.Connect(ctxT(t), cc); !errors.Is(err, ErrHostKeyMismatch) || !strings.HasPrefix(err.Error(), "c: bastion ") {
		t.Errorf("host whose bastion pins another key: err = %v, want its bastion's key refused", err)
	}

	// d trusts the bastion exactly as a does, so it reuses a's connection.
	d := targets["d"].hostConfig("d", id, khA)
	d.HostKeyPolicy = PolicyAcceptNew
	d.Bastions = []Config{hop}
	connectOK(t, p, d)
	if n := b.conns.Load(); n != 3 {
		t.Errorf("bastion connections = %d, want 3 (a and d share one; b and c each dial their own)", n)
	}
}

func TestChainKey(t *testing.T) {
	base := Config{Host: "bastion", Address: "jump.example", Port: 22, User: "ops", KnownHostsFiles: []string{"/kh"},
		HostKeyPolicy: PolicyStrict, IdentityFiles: []string{"/id"}, ConnectTimeout: time.Second, Attempts: 1}
	key := chainKey([]Config{base})
	for name, change := range map[string]func(*Config){
		"user":        func(c *Config) { c.User = "root" },
		"address":     func(c *Config) { c.Address = "jump2.example" },
		"port":        func(c *Config) { c.Port = 2222 },
		"known_hosts": func(c *Config) { c.KnownHostsFiles = []string{"/kh", "/other"} },
		"policy":      func(c *Config) { c.HostKeyPolicy = PolicyAcceptNew },
		"pinned key":  func(c *Config) { c.HostKey = "ssh-ed25519 AAAA" },
		"identities":  func(c *Config) { c.IdentityFiles = nil },
	} {
		c := base
		change(&c)
		if chainKey([]Config{c}) == key {
			t.Errorf("%s does not change the key", name)
		}
	}
	same := base
	same.Host, same.Address, same.ConnectTimeout, same.Attempts = "other-name", "JUMP.example", time.Minute, 5
	if chainKey([]Config{same}) != key {
		t.Error("name, case or patience changed the key")
	}
	if chainKey([]Config{base, base}) == key {
		t.Error("the path to a hop is not part of its key")
	}
}

func TestForwarding(t *testing.T) {
	id := newIdentity(t)
	_, p, _, cfg := trusted(t, id)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.Copy(c, c)
			c.Close()
		}
	}()
	c := connectOK(t, p, cfg)
	conn, err := c.Dial(ctxT(t), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || !bytes.Equal(buf, []byte("ping")) {
		t.Fatalf("echo = %q, %v", buf, err)
	}
}

// groupWrap's line, run by sh as sshd would: stdin and stdout pass through
// untouched, the exit status is the command's, and the first stderr line is
// the ID of a process group that is not the shell's.
func TestGroupWrap(t *testing.T) {
	if got, want := groupWrap("echo 'hi'"), `setsid -w sh -c 'echo "kprov-pgid=$$" >&2; exec sh -c "$1"' kprov 'echo '\''hi'\'''; exit $?`; got != want {
		t.Fatalf("groupWrap = %s\nwant        %s", got, want)
	}
	cmd := exec.Command("sh", "-c", groupWrap(`cat; printf 'x\r\n' ; ps -o pgid= -p $$ >&2; exit 3`))
	cmd.Stdin = strings.NewReader("in\x00put")
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	f := newPGIDFilter(&stderr)
	cmd.Stderr = f
	err := cmd.Run()
	f.flush()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("exit = %v, want status 3", err)
	}
	if stdout.String() != "in\x00putx\r\n" {
		t.Errorf("stdout = %q", stdout.String())
	}
	if pgid := f.PGID(); pgid <= 1 || strings.TrimSpace(stderr.String()) != strconv.Itoa(pgid) || pgid == os.Getpid() {
		t.Errorf("marker pgid %d, stderr %q: want the command's own group and no marker line", pgid, stderr.String())
	}
}

// The filter takes out exactly the first marker line, wherever the writes split.
func TestPGIDFilter(t *testing.T) {
	for _, c := range []struct {
		in, out string
		pgid    int
	}{
		{"kprov-pgid=4242\nerr\n", "err\n", 4242},
		{"sudo: unable to resolve host x\nkprov-pgid=17\nkprov-pgid=18\n", "sudo: unable to resolve host x\nkprov-pgid=18\n", 17},
		{"kprov-pgid=1\n", "kprov-pgid=1\n", 0},
		{"kprov-pgid=12", "kprov-pgid=12", 0},
		{"kprov-pid=12\nerr", "kprov-pid=12\nerr", 0},
		{"", "", 0},
	} {
		for split := 0; split <= len(c.in); split++ {
			var out bytes.Buffer
			f := newPGIDFilter(&out)
			f.Write([]byte(c.in[:split]))
			f.Write([]byte(c.in[split:]))
			f.flush()
			if out.String() != c.out || f.PGID() != c.pgid {
				t.Errorf("%q split at %d: out %q pgid %d, want %q %d", c.in, split, out.String(), f.PGID(), c.out, c.pgid)
			}
		}
	}
}
