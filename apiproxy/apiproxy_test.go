package apiproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// apiServer stands in for a kube-apiserver: /readyz answers ready (which a
// test may change) and every other path answers the server's name, so a
// test sees which upstream a connection reached.
type apiServer struct {
	name  string
	srv   *httptest.Server
	ready atomic.Int32 // /readyz status
}

func newAPIServer(t *testing.T, name string) *apiServer {
	t.Helper()
	a := &apiServer{name: name}
	a.ready.Store(http.StatusOK)
	a.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			w.WriteHeader(int(a.ready.Load()))
			return
		}
		io.WriteString(w, a.name)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *apiServer) addr() string { return a.srv.Listener.Addr().String() }

// logs collects what the proxy logs.
type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logs) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.lines, func(line string) bool { return strings.Contains(line, s) })
}

// testProxy is a Proxy serving on 127.0.0.1:0 until the test ends. Its
// check loop never fires (an hour's interval): the tests run health
// rounds with CheckNow, so what they see does not depend on timing.
type testProxy struct {
	*Proxy
	addr string
	log  *logs
	ca   *x509.CertPool
}

func startProxy(t *testing.T, upstreams ...string) *testProxy {
	t.Helper()
	l := &logs{}
	p := New(Config{CheckInterval: time.Hour, Logf: l.logf})
	p.SetUpstreams(upstreams)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		t.Logf("proxy log:\n%s", strings.Join(l.lines, "\n"))
	})
	// httptest's TLS servers share one certificate, valid for 127.0.0.1:
	// clients verify it through the proxy, as kubelet verifies the API
	// server's.
	certs := httptest.NewTLSServer(http.NotFoundHandler())
	certs.Close()
	ca := x509.NewCertPool()
	ca.AddCert(certs.Certificate())
	return &testProxy{Proxy: p, addr: ln.Addr().String(), log: l, ca: ca}
}

// conn is a client connection through the proxy, held open.
type conn struct {
	c *tls.Conn
	r *bufio.Reader
}

// dial opens a TLS connection through the proxy and asks once who answers.
func (tp *testProxy) dial(t *testing.T) (*conn, string) {
	t.Helper()
	c, err := tls.Dial("tcp", tp.addr, &tls.Config{RootCAs: tp.ca})
	if err != nil {
		t.Fatalf("dial through the proxy: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	// A bound on a hang, not a wait: every read here answers at once or
	// the test has failed.
	c.SetDeadline(time.Now().Add(20 * time.Second))
	cc := &conn{c: c, r: bufio.NewReader(c)}
	who, err := cc.who()
	if err != nil {
		t.Fatalf("first request through the proxy: %v", err)
	}
	return cc, who
}

// who asks, on the held connection, which upstream answers.
func (c *conn) who() (string, error) {
	if _, err := io.WriteString(c.c, "GET /who HTTP/1.1\r\nHost: kubernetes\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// closed reports whether the proxy has closed the connection: a read gets
// an error instead of blocking, since nothing else is in flight. The
// deadline running out means the connection stayed open.
func (c *conn) closed() bool {
	_, err := c.r.ReadByte()
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// get makes one request on a new connection and returns who answered.
func (tp *testProxy) get(t *testing.T) string {
	t.Helper()
	c, who := tp.dial(t)
	c.c.Close()
	return who
}

func (tp *testProxy) stateOf(addr string) health {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	for _, u := range tp.upstreams {
		if u.addr == addr {
			return u.state
		}
	}
	return -1
}

func TestProxiesToHealthyUpstream(t *testing.T) {
	a, b := newAPIServer(t, "a"), newAPIServer(t, "b")
	b.ready.Store(http.StatusInternalServerError)
	tp := startProxy(t, a.addr(), b.addr())
	for range DefaultFailAfter {
		tp.CheckNow(t.Context())
	}
	if s := tp.stateOf(a.addr()); s != up {
		t.Fatalf("a is %s after answering every check, want up", s)
	}
	if s := tp.stateOf(b.addr()); s != down {
		t.Fatalf("b is %s after failing %d checks, want down", s, DefaultFailAfter)
	}
	// Round-robin would send every other connection to b; a down
	// upstream gets none while a healthy one exists.
	for i := range 4 {
		if who := tp.get(t); who != "a" {
			t.Errorf("request %d answered by %s, want a (the only healthy upstream)", i, who)
		}
	}
}

// An API server that is alive but refuses anonymous access to /readyz
// is healthy; an error status or a redirect is not.
func TestReadyzStatuses(t *testing.T) {
	for _, c := range []struct {
		status int
		want   health
	}{
		{http.StatusOK, up}, {http.StatusUnauthorized, up}, {http.StatusForbidden, up},
		{http.StatusInternalServerError, down}, {http.StatusServiceUnavailable, down},
		{http.StatusNotFound, down}, {http.StatusFound, down},
	} {
		a := newAPIServer(t, "a")
		a.ready.Store(int32(c.status))
		tp := startProxy(t, a.addr())
		for range DefaultFailAfter {
			tp.CheckNow(t.Context())
		}
		if got := tp.stateOf(a.addr()); got != c.want {
			t.Errorf("/readyz %d: upstream %s, want %s", c.status, got, c.want)
		}
	}
}

// A master whose API server stops being ready loses its connections once
// the check is sure (FailAfter rounds), so the client reconnects, through
// the other master.
func TestDownUpstreamLosesItsConnections(t *testing.T) {
	servers := map[string]*apiServer{"a": newAPIServer(t, "a"), "b": newAPIServer(t, "b")}
	tp := startProxy(t, servers["a"].addr(), servers["b"].addr())
	tp.CheckNow(t.Context())
	held, who := tp.dial(t)
	failing := servers[who]
	failing.ready.Store(http.StatusInternalServerError)

	tp.CheckNow(t.Context())
	if s := tp.stateOf(failing.addr()); s != up {
		t.Fatalf("%s is %s after one failed check, want still up (FailAfter %d)", who, s, DefaultFailAfter)
	}
	if again, err := held.who(); err != nil || again != who {
		t.Fatalf("after one failed check the held connection gave %q, %v; want it still open to %s", again, err, who)
	}

	tp.CheckNow(t.Context())
	if s := tp.stateOf(failing.addr()); s != down {
		t.Fatalf("%s is %s after %d failed checks, want down", who, s, DefaultFailAfter)
	}
	if !held.closed() {
		t.Fatalf("the connection to %s stayed open after it went down", who)
	}
	if next := tp.get(t); next == who {
		t.Errorf("a new connection reached %s, which is down", who)
	}
	if !tp.log.contains("upstream " + failing.addr() + " down") {
		t.Errorf("no down transition logged: %q", tp.log.lines)
	}
}

// A dial failure marks the upstream down at once but leaves its other
// connections open; the health check closes them when it agrees.
func TestDialFailureLeavesConnectionsToTheCheck(t *testing.T) {
	a := newAPIServer(t, "a")
	tp := startProxy(t, a.addr())
	tp.CheckNow(t.Context())
	held, _ := tp.dial(t)
	// The listener stops accepting; connections it accepted go on.
	a.srv.Listener.Close()

	if c, err := tls.Dial("tcp", tp.addr, &tls.Config{RootCAs: tp.ca}); err == nil {
		c.Close()
		t.Fatal("a connection succeeded with no upstream accepting")
	}
	if s := tp.stateOf(a.addr()); s != down {
		t.Fatalf("a is %s after a refused dial, want down", s)
	}
	if !tp.log.contains("no upstream answered") {
		t.Errorf("the refused client was not logged: %q", tp.log.lines)
	}
	if who, err := held.who(); err != nil || who != "a" {
		t.Fatalf("a dial failure closed the held connection: %q, %v", who, err)
	}

	tp.CheckNow(t.Context())
	if !held.closed() {
		t.Error("the held connection stayed open after the check found a down too")
	}
}

// A refused upstream listed first is skipped, as at the first boot of the
// first master, before any check has answered: nothing is known healthy,
// and the fallback order tries each upstream.
func TestRefusedUpstreamIsSkipped(t *testing.T) {
	refused := closedAddr(t)
	a := newAPIServer(t, "a")
	tp := startProxy(t, refused, a.addr())
	// The first connection's rotation starts at the first upstream.
	if who := tp.get(t); who != "a" {
		t.Fatalf("answered by %q, want a", who)
	}
	if s := tp.stateOf(refused); s != down {
		t.Errorf("the refused upstream is %s, want down (it was dialed first)", s)
	}
	if s := tp.stateOf(a.addr()); s != unknown {
		t.Errorf("a is %s with no check run, want unknown", s)
	}
}

// closedAddr is a local address that refuses connections.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Four held connections over two healthy masters go two to each. A third,
// down upstream shifts the rotation so that plain round-robin would send
// three to one master; least connections does not.
func TestLeastConnectionsSpreadsHeldConnections(t *testing.T) {
	a, b, c := newAPIServer(t, "a"), newAPIServer(t, "b"), newAPIServer(t, "c")
	c.ready.Store(http.StatusServiceUnavailable)
	tp := startProxy(t, a.addr(), b.addr(), c.addr())
	for range DefaultFailAfter {
		tp.CheckNow(t.Context())
	}
	count := map[string]int{}
	for range 4 {
		_, who := tp.dial(t) // held until the test ends
		count[who]++
	}
	if count["a"] != 2 || count["b"] != 2 {
		t.Errorf("4 held connections went %v, want 2 to a and 2 to b", count)
	}
}

// Removing a master from the list closes its connections, keeps the
// others and the health of the upstreams that stay.
func TestSetUpstreamsRemovingAnAddressClosesItsConnections(t *testing.T) {
	servers := map[string]*apiServer{"a": newAPIServer(t, "a"), "b": newAPIServer(t, "b")}
	tp := startProxy(t, servers["a"].addr(), servers["b"].addr())
	tp.CheckNow(t.Context())
	held := map[string]*conn{}
	for range 2 {
		c, who := tp.dial(t)
		held[who] = c
	}
	if len(held) != 2 {
		t.Fatalf("two connections reached only %v", held)
	}

	tp.SetUpstreams([]string{servers["a"].addr()})
	if !held["b"].closed() {
		t.Error("the connection to removed upstream b stayed open")
	}
	if who, err := held["a"].who(); err != nil || who != "a" {
		t.Errorf("the connection to a, which stays, gave %q, %v", who, err)
	}
	if s := tp.stateOf(servers["a"].addr()); s != up {
		t.Errorf("a is %s after SetUpstreams kept it, want its health kept (up)", s)
	}
	if who := tp.get(t); who != "a" {
		t.Errorf("a new connection reached %s", who)
	}
	if !tp.log.contains("removed: " + servers["b"].addr()) {
		t.Errorf("the removal was not logged: %q", tp.log.lines)
	}
}

func TestReadUpstreams(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "# masters\n10.0.0.11:6443\n\n  10.0.0.12:6443  # cp-2\n[fd00::13]:6443\ncp-4.example:6443\n")
	got, err := ReadUpstreams(good)
	if want := []string{"10.0.0.11:6443", "10.0.0.12:6443", "[fd00::13]:6443", "cp-4.example:6443"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("ReadUpstreams = %q, %v; want %q", got, err, want)
	}

	for _, c := range []struct{ content, want string }{
		{"10.0.0.11:6443\n10.0.0.12\n", ":2: \"10.0.0.12\": want host:port"},
		{"10.0.0.11:6443\n\n10.0.0.12:https\n", ":3: \"10.0.0.12:https\": port \"https\" is not a number"},
		{"10.0.0.11:70000\n", ":1: \"10.0.0.11:70000\": port \"70000\""},
		{":6443\n", ":1: \":6443\": the host is empty"},
		{"10.0.0.11:6443 10.0.0.12:6443\n", ":1: \"10.0.0.11:6443 10.0.0.12:6443\": want one host:port a line"},
		{"10.0.0.11:6443\n10.0.0.11:6443\n", ":2: 10.0.0.11:6443 is already listed on line 1"},
		{"# nothing yet\n\n", ": no upstreams"},
	} {
		p := write("bad", c.content)
		_, err := ReadUpstreams(p)
		if err == nil || !strings.Contains(err.Error(), p+c.want) {
			t.Errorf("%q: error %v, want it to contain %q", c.content, err, p+c.want)
		}
	}
	if _, err := ReadUpstreams(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}
}

func TestMainMissingUpstreamsFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "apiproxy.upstreams")
	args := []string{"--listen", "127.0.0.1:0", "--upstreams", missing}
	if code := Main(args); code != 2 {
		t.Errorf("Main with a missing upstreams file exited %d, want 2", code)
	}
	var stderr bytes.Buffer
	if code := run(args, &stderr); code != 2 || !strings.Contains(stderr.String(), missing) {
		t.Errorf("exit %d, stderr %q: want 2 and the file named", code, stderr.String())
	}
	if code := run([]string{"--check-interval", "often"}, &stderr); code != 2 {
		t.Errorf("a bad flag exited %d, want 2", code)
	}
}

// Source carries every file of the package, so the lab can build the
// command outside this module.
func TestSourceEmbedsThePackage(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := Source.ReadFile(f); err != nil || !bytes.Equal(got, want) {
			t.Errorf("Source lacks %s or holds another version of it (%v)", f, err)
		}
	}
}
