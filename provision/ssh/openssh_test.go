package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

const sshdPath = "/usr/sbin/sshd"

// realSSHD is a Debian OpenSSH sshd run by the test on a loopback port with
// its own host key and authorized_keys in a temporary directory.
type realSSHD struct {
	port    int
	hostKey ssh.PublicKey
	log     *logBuffer
}

func (d *realSSHD) addr() string { return fmt.Sprintf("127.0.0.1:%d", d.port) }

func (d *realSSHD) knownLine() string {
	return knownhosts.Line([]string{knownhosts.Normalize(d.addr())}, d.hostKey)
}

func (d *realSSHD) config(id clientIdentity, kh string) Config {
	return Config{Host: "real", Address: "127.0.0.1", Port: d.port, User: "root", IdentityFiles: []string{id.file},
		KnownHostsFiles: []string{kh}, ConnectTimeout: 10 * time.Second}
}

func startSSHD(t *testing.T, authorized ssh.PublicKey) *realSSHD {
	t.Helper()
	if _, err := os.Stat(sshdPath); err != nil {
		t.Skipf("real OpenSSH tests need %s (Debian package openssh-server): %v", sshdPath, err)
	}
	if os.Geteuid() == 0 {
		// Debian's sshd refuses to start without its privilege separation
		// directory, which only exists once the service has run.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pubData, _ := os.ReadFile(hostKey + ".pub")
	hostPub, _, _, _, err := ssh.ParseAuthorizedKey(pubData)
	if err != nil {
		t.Fatal(err)
	}
	authKeys := filepath.Join(dir, "authorized_keys")
	os.WriteFile(authKeys, ssh.MarshalAuthorizedKey(authorized), 0o600)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg := filepath.Join(dir, "sshd_config")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
AuthorizedKeysFile %s
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
PidFile none
AllowTcpForwarding yes
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel ERROR
`, port, hostKey, authKeys)), 0o600)

	stderr := &logBuffer{}
	cmd := exec.Command(sshdPath, "-D", "-e", "-f", cfg)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	d := &realSSHD{port: port, hostKey: hostPub, log: stderr}
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.Dial("tcp", d.addr())
		if err == nil {
			c.Close()
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd did not start: %v\n%s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestOpenSSHHostKeys(t *testing.T) {
	id := newIdentity(t)
	d := startSSHD(t, id.pub)
	t.Run("strict known", func(t *testing.T) {
		p, _ := newPool(t, Options{})
		c := connectOK(t, p, d.config(id, knownHosts(t, d.knownLine())))
		res, err := c.Run(ctxT(t), Command{Cmd: "id -u"})
		if err != nil || strings.TrimSpace(string(res.Stdout)) != "0" {
			t.Fatalf("id -u = %q, %v", res.Stdout, err)
		}
	})
	t.Run("strict unknown", func(t *testing.T) {
		p, _ := newPool(t, Options{})
		_, err := p.Connect(ctxT(t), d.config(id, knownHosts(t, "# none")))
		if !errors.Is(err, ErrHostKeyUnknown) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("accept-new", func(t *testing.T) {
		p, _ := newPool(t, Options{})
		kh := filepath.Join(t.TempDir(), "known_hosts")
		cfg := d.config(id, kh)
		cfg.HostKeyPolicy = PolicyAcceptNew
		connectOK(t, p, cfg)
		if data, _ := os.ReadFile(kh); strings.TrimSpace(string(data)) != d.knownLine() {
			t.Errorf("recorded %q, want %q", data, d.knownLine())
		}
	})
	t.Run("mismatch", func(t *testing.T) {
		p, _ := newPool(t, Options{})
		other := newSigner(t).PublicKey()
		kh := knownHosts(t, knownhosts.Line([]string{knownhosts.Normalize(d.addr())}, other))
		cfg := d.config(id, kh)
		cfg.HostKeyPolicy = PolicyAcceptNew
		_, err := p.Connect(ctxT(t), cfg)
		if !errors.Is(err, ErrHostKeyMismatch) || !strings.Contains(err.Error(), ssh.FingerprintSHA256(d.hostKey)) ||
			!strings.Contains(err.Error(), kh+":1") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("revoked", func(t *testing.T) {
		p, _ := newPool(t, Options{})
		kh := knownHosts(t, d.knownLine(), "@revoked * "+string(bytes.TrimSpace(ssh.MarshalAuthorizedKey(d.hostKey))))
		_, err := p.Connect(ctxT(t), d.config(id, kh))
		if !errors.Is(err, ErrHostKeyRevoked) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestOpenSSHFilesAndCancellation(t *testing.T) {
	id := newIdentity(t)
	d := startSSHD(t, id.pub)
	p, logs := newPool(t, Options{})
	c := connectOK(t, p, d.config(id, knownHosts(t, d.knownLine())))

	dir := t.TempDir()
	target := filepath.Join(dir, "token")
	os.WriteFile(target, []byte("old"), 0o644)
	changed, err := c.Upload(ctxT(t), FileSpec{Path: target, Content: strings.NewReader("new secret"), Secret: true})
	if err != nil || !changed {
		t.Fatalf("upload = %v, %v", changed, err)
	}
	if changed, err = c.Upload(ctxT(t), FileSpec{Path: target, Content: strings.NewReader("new secret"), Secret: true}); err != nil || changed {
		t.Fatalf("repeat upload = %v, %v; want unchanged", changed, err)
	}
	st, _ := os.Stat(target)
	var buf bytes.Buffer
	if err := c.Download(ctxT(t), target, &buf); err != nil || buf.String() != "new secret" || st.Mode().Perm() != 0o600 {
		t.Fatalf("download = %q (mode %o), %v", buf.String(), st.Mode().Perm(), err)
	}

	// Stdout is byte for byte the command's; stderr is too, once the
	// wrapper's process group line is taken out.
	res, err := c.Run(ctxT(t), Command{Cmd: `printf 'a\r\nb\000c'; printf 'e1\ne2' >&2`})
	if err != nil || string(res.Stdout) != "a\r\nb\x00c" || string(res.Stderr) != "e1\ne2" {
		t.Fatalf("run = %q, %q, %v", res.Stdout, res.Stderr, err)
	}
	if res, err := c.Run(ctxT(t), Command{Cmd: "cat", Stdin: strings.NewReader("in\n")}); err != nil || string(res.Stdout) != "in\n" {
		t.Fatalf("stdin: %q, %v", res.Stdout, err)
	}
	var exit *ExitError
	if _, err := c.Run(ctxT(t), Command{Cmd: "exit 7"}); !errors.As(err, &exit) || exit.Status != 7 {
		t.Fatalf("exit 7: %v", err)
	}

	// OpenSSH refuses the signal request for root logins; the process group
	// kill must stop the command and the children it started. Each command
	// says when it runs by creating a file (sshd is local), and is cancelled
	// only then: cancelling after a fixed delay raced the command's start on
	// a loaded machine.
	t.Run("cancel", func(t *testing.T) {
		sleepers := []string{"sleep 31.731", "sleep 31.732"}
		ready := filepath.Join(t.TempDir(), "ready")
		ctx, cancel := context.WithCancel(ctxT(t))
		cancelWhenExists(t, cancel, ready)
		start := time.Now()
		if _, err := c.Run(ctx, Command{Cmd: sleepers[0] + " & " + sleepers[1] + " & : > " + ready + "; wait"}); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		// The stop waits until the group has vanished, zombies reaped: at
		// once under systemd, a second or two under some container inits.
		t.Logf("cancellation returned after %s", time.Since(start).Round(time.Millisecond))
		waitGone(t, sleepers, 3*time.Second)
	})
	// A command that ignores SIGTERM gets SIGKILL after the grace period.
	// What is asserted is what happened to the process group, not how long
	// it took (wall time on a loaded machine proves nothing): the group's
	// shell saw TERM, the stop then needed KILL, and nothing of the group
	// is left.
	t.Run("ignores TERM", func(t *testing.T) {
		sleeper := "sleep 31.733"
		dir := t.TempDir()
		ready, term := filepath.Join(dir, "ready"), filepath.Join(dir, "term")
		// The shell records each TERM and goes on waiting; its child
		// ignores TERM outright, so only KILL ends the group.
		cmd := "trap 'echo TERM >> " + term + "' TERM; ( trap '' TERM; exec " + sleeper + " ) & pid=$!; : > " + ready + "; " +
			"while kill -0 $pid 2>/dev/null; do wait $pid; done"
		ctx, cancel := context.WithCancel(ctxT(t))
		cancelWhenExists(t, cancel, ready)
		_, err := c.Run(ctx, Command{Cmd: cmd})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if data, _ := os.ReadFile(term); !strings.Contains(string(data), "TERM") {
			t.Errorf("the command's process group never got SIGTERM (trap output %q)", data)
		}
		if !strings.Contains(logs.String(), "cancelled command ignored SIGTERM and was killed") {
			t.Errorf("the stop did not need SIGKILL; log:\n%s", logs)
		}
		waitGone(t, []string{sleeper}, 3*time.Second)
	})
}

// cancelWhenExists calls cancel once file exists, or after 20 seconds
// (failing the test) if it never does.
func cancelWhenExists(t *testing.T, cancel context.CancelFunc, file string) {
	t.Helper()
	t.Cleanup(cancel)
	go func() {
		defer cancel()
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if _, err := os.Stat(file); err == nil {
				return
			}
		}
		t.Errorf("the command never created %s", file)
	}()
}

// waitGone fails the test if a process whose command line is one of
// cmdlines outlives the wait, and kills what it finds (by process ID).
func waitGone(t *testing.T, cmdlines []string, wait time.Duration) {
	t.Helper()
	for _, cl := range cmdlines {
		for deadline := time.Now().Add(wait); ; time.Sleep(50 * time.Millisecond) {
			out, err := exec.Command("pgrep", "-f", "^"+cl+"$").Output()
			if err != nil {
				break
			}
			if time.Now().After(deadline) {
				for _, pid := range strings.Fields(string(out)) {
					exec.Command("kill", "-KILL", pid).Run()
				}
				t.Errorf("%q (pid %s) still runs after cancellation", cl, strings.Fields(string(out)))
				break
			}
		}
	}
}

func TestOpenSSHBastion(t *testing.T) {
	id := newIdentity(t)
	bastion := startSSHD(t, id.pub)
	target := startSSHD(t, id.pub)
	p, _ := newPool(t, Options{})
	kh := knownHosts(t, bastion.knownLine(), target.knownLine())
	cfg := target.config(id, kh)
	cfg.Bastions = []Config{{Host: "bastion", Address: "127.0.0.1", Port: bastion.port, User: "root"}}
	c := connectOK(t, p, cfg)
	if _, err := c.Run(ctxT(t), Command{Cmd: "true"}); err != nil {
		t.Fatal(err)
	}
	// The bastion's key is checked too.
	bad := knownHosts(t, knownhosts.Line([]string{knownhosts.Normalize(bastion.addr())}, newSigner(t).PublicKey()), target.knownLine())
	cfg.KnownHostsFiles = []string{bad}
	cfg.Host = "real-2"
	p2, _ := newPool(t, Options{})
	if _, err := p2.Connect(ctxT(t), cfg); !errors.Is(err, ErrHostKeyMismatch) || !strings.Contains(err.Error(), "bastion") {
		t.Fatalf("err = %v, want bastion mismatch", err)
	}
}
