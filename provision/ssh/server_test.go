package ssh

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/kprov/kprov/internal/shell"
)

// handler runs one exec request on the fake server and returns its exit
// status. signals delivers "signal" channel requests (e.g. "TERM").
type handler func(stdin io.Reader, stdout, stderr io.Writer, signals <-chan string) int

// fakeServer is an in-process SSH server on 127.0.0.1:0. It runs only the
// commands a test told it to expect; anything else fails the test. Commands
// registered with expect arrive wrapped by groupWrap, as Client.Run sends
// them as root; the others (the sudo probe, a process group kill, a
// command through sudo) are registered as sent with expectRaw.
type fakeServer struct {
	t         testing.TB
	ln        net.Listener
	addr      string
	port      int
	hostKeys  []ssh.Signer
	clientKey ssh.PublicKey // accepted user key (nil: any key from userCA or none)
	userCA    ssh.PublicKey
	rejectN   int32 // reject authentication on the first rejectN connections

	conns        atomic.Int32
	keepalives   atomic.Int32
	ignoreGlobal atomic.Bool
	stall        bool
	// refuseSignals refuses "signal" requests as OpenSSH does for root
	// logins ("session signalling requires privilege separation").
	refuseSignals bool

	mu       sync.Mutex
	exact    map[string]handler // inner commands of groupWrap lines
	prefix   map[string]handler
	raw      map[string]handler // lines as sent
	rawPfx   map[string]func(line string) handler
	ran      []string // inner commands of groupWrap lines, other lines as sent
	requests []string // session request types seen
	users    []string
	forwards int
	open     []net.Conn
	wg       sync.WaitGroup
}

func newFakeServer(t testing.TB, clientKey ssh.PublicKey, hostKeys ...ssh.Signer) *fakeServer {
	t.Helper()
	return newFakeServerAt(t, "127.0.0.1:0", clientKey, hostKeys...)
}

// newFakeServerAt is newFakeServer listening on listenAddr (e.g. "[::1]:0").
func newFakeServerAt(t testing.TB, listenAddr string, clientKey ssh.PublicKey, hostKeys ...ssh.Signer) *fakeServer {
	t.Helper()
	if len(hostKeys) == 0 {
		hostKeys = []ssh.Signer{newSigner(t)}
	}
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil && strings.HasPrefix(listenAddr, "[") {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{t: t, ln: ln, addr: ln.Addr().String(), port: ln.Addr().(*net.TCPAddr).Port,
		hostKeys: hostKeys, clientKey: clientKey, exact: map[string]handler{}, prefix: map[string]handler{},
		raw: map[string]handler{}, rawPfx: map[string]func(string) handler{}}
	t.Cleanup(s.close)
	return s
}

func (s *fakeServer) start() *fakeServer {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			n := s.conns.Add(1)
			s.mu.Lock()
			s.open = append(s.open, c)
			s.mu.Unlock()
			if s.stall {
				continue // accept TCP, never speak SSH: a hung host
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serveConn(c, n)
			}()
		}
	}()
	return s
}

func (s *fakeServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// expect registers a handler for a command, sent wrapped by groupWrap.
func (s *fakeServer) expect(cmd string, h handler) *fakeServer {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exact[cmd] = h
	return s
}

// expectPrefix registers a handler for commands with a prefix, sent wrapped
// by groupWrap (for commands naming random temporary files).
func (s *fakeServer) expectPrefix(prefix string, h handler) *fakeServer {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prefix[prefix] = h
	return s
}

// expectRaw registers a handler for a line exactly as sent.
func (s *fakeServer) expectRaw(line string, h handler) *fakeServer {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.raw[line] = h
	return s
}

// expectRawPrefix registers a handler, made from the whole line, for lines
// as sent with a prefix.
func (s *fakeServer) expectRawPrefix(prefix string, h func(line string) handler) *fakeServer {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rawPfx[prefix] = h
	return s
}

// expectGroupKill accepts the second session that stops a cancelled
// command's process group (killGroupScript, through sudo when sudo is
// true), and runs it for real: the group is a real one, made by a shell
// handler running groupWrap.
func (s *fakeServer) expectGroupKill(sudo bool) *fakeServer {
	prefix := "kill -TERM -"
	if sudo {
		prefix = "sudo -n -- sh -c '" + prefix
	}
	return s.expectRawPrefix(prefix, rawShell)
}

// unwrapGroup returns the command inside a groupWrap line.
func unwrapGroup(line string) (string, bool) {
	const probe = "\x00"
	w := groupWrap(probe)
	i := strings.Index(w, shell.Quote(probe))
	pre, post := w[:i], w[i+len(shell.Quote(probe)):]
	q, ok := strings.CutPrefix(line, pre)
	if !ok {
		return "", false
	}
	if q, ok = strings.CutSuffix(q, post); !ok || len(q) < 2 || q[0] != '\'' || q[len(q)-1] != '\'' {
		return "", false
	}
	cmd := strings.ReplaceAll(q[1:len(q)-1], `'\''`, `'`)
	return cmd, shell.Quote(cmd) == q
}

func (s *fakeServer) commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ran...)
}

func (s *fakeServer) sessionRequests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

func (s *fakeServer) config(n int32) *ssh.ServerConfig {
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if n <= s.rejectN {
				return nil, errors.New("not yet")
			}
			if cert, ok := key.(*ssh.Certificate); ok && s.userCA != nil {
				cc := ssh.CertChecker{IsUserAuthority: func(auth ssh.PublicKey) bool {
					return bytes.Equal(auth.Marshal(), s.userCA.Marshal())
				}}
				return cc.Authenticate(meta, cert)
			}
			if s.clientKey != nil && bytes.Equal(key.Marshal(), s.clientKey.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("unknown key")
		},
	}
	for _, k := range s.hostKeys {
		cfg.AddHostKey(k)
	}
	return cfg
}

func (s *fakeServer) serveConn(c net.Conn, n int32) {
	defer c.Close()
	sc, chans, reqs, err := ssh.NewServerConn(c, s.config(n))
	if err != nil {
		return
	}
	defer sc.Close()
	s.mu.Lock()
	s.users = append(s.users, sc.User())
	s.mu.Unlock()
	go func() {
		for r := range reqs {
			if r.Type == "keepalive@openssh.com" {
				s.keepalives.Add(1)
			}
			if s.ignoreGlobal.Load() {
				continue // a host that has gone silent
			}
			r.Reply(false, nil)
		}
	}()
	for nc := range chans {
		switch nc.ChannelType() {
		case "session":
			ch, creqs, err := nc.Accept()
			if err != nil {
				continue
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serveSession(ch, creqs)
			}()
		case "direct-tcpip":
			s.forward(nc)
		default:
			nc.Reject(ssh.UnknownChannelType, "no")
		}
	}
}

// forward implements direct-tcpip, to loopback only.
func (s *fakeServer) forward(nc ssh.NewChannel) {
	var p struct {
		Host       string
		Port       uint32
		OriginHost string
		OriginPort uint32
	}
	if err := ssh.Unmarshal(nc.ExtraData(), &p); err != nil || (p.Host != "127.0.0.1" && p.Host != "localhost") {
		nc.Reject(ssh.Prohibited, "loopback only")
		return
	}
	c, err := net.Dial("tcp", net.JoinHostPort(p.Host, strconv.Itoa(int(p.Port))))
	if err != nil {
		nc.Reject(ssh.ConnectionFailed, err.Error())
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		c.Close()
		return
	}
	s.mu.Lock()
	s.forwards++
	s.open = append(s.open, c)
	s.mu.Unlock()
	go ssh.DiscardRequests(reqs)
	s.wg.Add(2)
	go func() { defer s.wg.Done(); io.Copy(c, ch); c.(*net.TCPConn).CloseWrite() }()
	go func() { defer s.wg.Done(); io.Copy(ch, c); ch.Close() }()
}

func (s *fakeServer) serveSession(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	signals := make(chan string, 4)
	started := false
	for r := range reqs {
		s.mu.Lock()
		s.requests = append(s.requests, r.Type)
		s.mu.Unlock()
		switch {
		case r.Type == "signal" && s.refuseSignals:
			if r.WantReply {
				r.Reply(false, nil)
			}
		case r.Type == "signal":
			var sig struct{ Name string }
			ssh.Unmarshal(r.Payload, &sig)
			select {
			case signals <- sig.Name:
			default:
			}
		case r.Type == "exec" && !started:
			var cmd struct{ Command string }
			ssh.Unmarshal(r.Payload, &cmd)
			h := s.lookup(cmd.Command)
			r.Reply(h != nil, nil)
			if h == nil {
				return
			}
			started = true
			s.runHandler(ch, h, signals, false)
		case r.Type == "subsystem" && !started:
			var sub struct{ Name string }
			ssh.Unmarshal(r.Payload, &sub)
			r.Reply(sub.Name == "sftp", nil)
			if sub.Name != "sftp" {
				return
			}
			started = true
			// The handler's end of session (CloseWrite, Close) goes through
			// the same lock as the sftp server's writes.
			lc := &lockedChannel{Channel: ch}
			s.runHandler(lc, serveSFTP(lc), signals, true)
		default:
			// Agent forwarding, pty, env, x11: refused, and recorded so a
			// test can assert the client never asked.
			if r.WantReply {
				r.Reply(false, nil)
			}
		}
	}
}

func (s *fakeServer) lookup(line string) handler {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cmd, ok := unwrapGroup(line); ok {
		s.ran = append(s.ran, cmd)
		if h, ok := s.exact[cmd]; ok {
			return h
		}
		for p, h := range s.prefix {
			if strings.HasPrefix(cmd, p) {
				return h
			}
		}
		s.t.Errorf("fake server: unexpected command %q (wrapped as %q)", cmd, line)
		return nil
	}
	s.ran = append(s.ran, line)
	if h, ok := s.raw[line]; ok {
		return h
	}
	for p, h := range s.rawPfx {
		if strings.HasPrefix(line, p) {
			return h(line)
		}
	}
	s.t.Errorf("fake server: unexpected command line %q", line)
	return nil
}

func (s *fakeServer) runHandler(ch ssh.Channel, h handler, signals <-chan string, sftpSession bool) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		status := h(ch, ch, ch.Stderr(), signals)
		ch.CloseWrite()
		ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(status)}))
		ch.Close()
	}()
}

// script answers with fixed output.
func script(stdout, stderr string, status int) handler {
	return func(_ io.Reader, o, e io.Writer, _ <-chan string) int {
		io.WriteString(o, stdout)
		io.WriteString(e, stderr)
		return status
	}
}

// shellHandler runs a line with sh as sshd would, the login shell killed (with its
// process group) on a signal, so that commands touching t.TempDir files
// behave for real. For a command registered with expect, line is the
// command and what runs is groupWrap(line), as sent: the command gets a
// session of its own, and the signal does not reach it.
func shellHandler(line string) handler {
	return rawShell(groupWrap(line))
}

// rawShell runs line with sh as it is.
func rawShell(line string) handler {
	return func(in io.Reader, o, e io.Writer, signals <-chan string) int {
		cmd := exec.Command("sh", "-c", line)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = in, o, e
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return 127
		}
		done := make(chan struct{})
		go func() {
			select {
			case <-signals:
				syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			case <-done:
			}
		}()
		err := cmd.Wait()
		close(done)
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ee.ExitCode() < 0 {
				return 143
			}
			return ee.ExitCode()
		}
		return 0
	}
}

// serveSFTP runs pkg/sftp's server on the channel (real files).
func serveSFTP(lc *lockedChannel) handler {
	return func(io.Reader, io.Writer, io.Writer, <-chan string) int {
		srv, err := sftp.NewServer(lc)
		if err != nil {
			return 1
		}
		srv.Serve()
		lc.Close()
		return 0
	}
}

// lockedChannel serialises writes with Close: pkg/sftp's server may still be
// flushing a response when Serve returns, and x/crypto's channel does not
// allow Write concurrently with CloseWrite or Close.
type lockedChannel struct {
	ssh.Channel
	mu sync.Mutex
}

func (c *lockedChannel) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Channel.Write(p)
}

func (c *lockedChannel) CloseWrite() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Channel.CloseWrite()
}

func (c *lockedChannel) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Channel.Close()
}

// --- keys and files ---

func newSigner(t testing.TB) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	return mustSigner(t, priv, err)
}

func newECDSASigner(t testing.TB) ssh.Signer {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return mustSigner(t, priv, err)
}

func mustSigner(t testing.TB, priv any, err error) ssh.Signer {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// writeKey writes priv as an OpenSSH private key file (encrypted when
// passphrase is set) and returns its path.
func writeKey(t testing.TB, dir string, priv any, passphrase string) string {
	t.Helper()
	var block *pem.Block
	var err error
	if passphrase == "" {
		block, err = ssh.MarshalPrivateKey(priv, "test")
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "test", []byte(passphrase))
	}
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, fmt.Sprintf("id_%d", time.Now().UnixNano()))
	if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// clientIdentity is a fresh ed25519 user key on disk.
type clientIdentity struct {
	file string
	pub  ssh.PublicKey
	priv ed25519.PrivateKey
}

func newIdentity(t testing.TB) clientIdentity {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, _ := ssh.NewPublicKey(pub)
	return clientIdentity{file: writeKey(t, t.TempDir(), priv, ""), pub: sp, priv: priv}
}

// knownHosts writes lines to a new known_hosts file.
func knownHosts(t testing.TB, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// knownLine is a known_hosts line for the server's address and key.
func (s *fakeServer) knownLine(key ssh.PublicKey) string {
	return knownhosts.Line([]string{knownhosts.Normalize(s.addr)}, key)
}

// hostConfig is a Config reaching s as root with id, trusting khFile.
func (s *fakeServer) hostConfig(name string, id clientIdentity, khFile string) Config {
	return Config{
		Host: name, Address: "127.0.0.1", Port: s.port, User: "root",
		IdentityFiles: []string{id.file}, KnownHostsFiles: []string{khFile},
		ConnectTimeout: 5 * time.Second, KeepAlive: -1,
	}
}
