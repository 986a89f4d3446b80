// Package apiproxy is kprov-apiproxy, the node-local load balancer in front
// of every master's kube-apiserver. Each Kubernetes node runs it on
// 127.0.0.1:6444, and kubeadm's controlPlaneEndpoint points there, so
// kubelet, kube-proxy and joins keep working while any one master is down.
//
// The proxy is pure L4: it copies bytes and never terminates TLS, so
// clients still verify the API server's certificate end to end and the
// proxy holds no key. It uses only the standard library because its source
// is embedded into kprov (Source) and built on the operator's machine in a
// throwaway module that has no requirements to download.
package apiproxy

import (
	"cmp"
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Source is this package's source, for building the kprov-apiproxy binary
// outside the kprov module (kprov is not on the module proxy). It holds
// the _test.go files too; a build leaves them out.
//
//go:embed *.go
var Source embed.FS

// Config configures a Proxy; a zero field takes its default.
type Config struct {
	// Listen is where Main listens (default 127.0.0.1:6444); Serve takes a listener.
	Listen string
	// UpstreamsFile is what Main reads at start and on SIGHUP
	// (default /etc/kprov/apiproxy.upstreams).
	UpstreamsFile string
	// CheckInterval is the time between health rounds (default 1s).
	CheckInterval time.Duration
	// CheckTimeout bounds one upstream's /readyz request (default 1s).
	CheckTimeout time.Duration
	// DialTimeout bounds one dial to an upstream (default 2s).
	DialTimeout time.Duration
	// FailAfter is how many consecutive failed checks mark an upstream
	// down (default 2): one lost check on a busy master should not cut
	// every watch through it.
	FailAfter int
	// Logf logs transitions and failures; the default writes to stderr
	// without timestamps, since journald adds them.
	Logf func(format string, args ...any)
}

// Defaults of Config.
const (
	DefaultListen        = "127.0.0.1:6444"
	DefaultUpstreamsFile = "/etc/kprov/apiproxy.upstreams"
	DefaultCheckInterval = time.Second
	DefaultCheckTimeout  = time.Second
	DefaultDialTimeout   = 2 * time.Second
	DefaultFailAfter     = 2
)

// withDefaults fills in every zero field; a negative duration or count
// is taken as unset too.
func (c Config) withDefaults() Config {
	c.Listen = cmp.Or(c.Listen, DefaultListen)
	c.UpstreamsFile = cmp.Or(c.UpstreamsFile, DefaultUpstreamsFile)
	c.CheckInterval = positive(c.CheckInterval, DefaultCheckInterval)
	c.CheckTimeout = positive(c.CheckTimeout, DefaultCheckTimeout)
	c.DialTimeout = positive(c.DialTimeout, DefaultDialTimeout)
	c.FailAfter = positive(c.FailAfter, DefaultFailAfter)
	if c.Logf == nil {
		c.Logf = log.New(os.Stderr, "", 0).Printf
	}
	return c
}

// positive is v, or def when v is not above zero.
func positive[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// health is what the proxy believes of an upstream.
type health int

const (
	// unknown: not checked yet. At the first boot of the first master
	// nothing has answered a check, but the local API server may take
	// connections, so unknown upstreams are a fallback, not excluded.
	unknown health = iota
	up
	down
)

func (h health) String() string {
	return [...]string{"unknown", "up", "down"}[h]
}

// upstream is one kube-apiserver and the connections proxied to it.
type upstream struct {
	addr  string
	state health
	// fails counts consecutive failed checks and dials since the last
	// successful check.
	fails int
	// drained is set once a failed check has closed the connections of
	// the current failure streak, so later failed rounds do not close
	// the fallback connections a client opens while every master is down.
	drained bool
	conns   map[*link]struct{}
}

// link is one client connection and its upstream connection.
type link struct {
	client, server net.Conn
	once           sync.Once
}

// close closes both sides; either copy ending, a failed check, a removed
// upstream or shutdown calls it, and more than one may.
func (l *link) close() {
	l.once.Do(func() {
		l.client.Close()
		l.server.Close()
	})
}

// Proxy spreads client connections over the kube-apiservers it is given.
type Proxy struct {
	cfg   Config
	check *http.Client

	mu        sync.Mutex
	upstreams []*upstream // in the order given
	next      int         // round-robin position
	closed    bool        // Serve has returned; new links are closed at once
}

// New returns a Proxy with no upstreams; call SetUpstreams before Serve.
func New(cfg Config) *Proxy {
	cfg = cfg.withDefaults()
	return &Proxy{
		cfg: cfg,
		check: &http.Client{
			Timeout: cfg.CheckTimeout,
			Transport: &http.Transport{
				// The check only decides where to route. Clients verify the
				// API server's certificate themselves, end to end through
				// this L4 proxy, so skipping verification here trusts
				// nothing: a fake upstream could at worst attract
				// connections whose TLS handshake then fails. The proxy
				// holds no CA to verify with, and needs none.
				TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
				// A fresh connection each round checks what clients need
				// (that the server accepts connections), not an old one.
				DisableKeepAlives: true,
				// Proxy is nil: an HTTPS_PROXY in the unit's environment
				// must not decide which master looks healthy.
			},
			// A redirect is not an answer from /readyz.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// SetUpstreams replaces the upstream list. An address that stays keeps its
// health and connections; every connection to a removed address is closed,
// since its master is leaving the cluster.
func (p *Proxy) SetUpstreams(addrs []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := map[string]*upstream{}
	for _, u := range p.upstreams {
		old[u.addr] = u
	}
	var next []*upstream
	var added []string
	for _, a := range addrs {
		if slices.ContainsFunc(next, func(u *upstream) bool { return u.addr == a }) {
			continue
		}
		u, ok := old[a]
		if ok {
			delete(old, a)
		} else {
			u = &upstream{addr: a, conns: map[*link]struct{}{}}
			added = append(added, a)
		}
		next = append(next, u)
	}
	var removed []string
	for _, u := range p.upstreams {
		if _, gone := old[u.addr]; !gone {
			continue
		}
		removed = append(removed, u.addr)
		if n := len(u.conns); n > 0 {
			p.cfg.Logf("upstream %s removed: closing its %d connections", u.addr, n)
		}
		closeAll(u)
	}
	p.upstreams = next
	if len(added)+len(removed) > 0 {
		p.cfg.Logf("upstreams: %s (added: %s; removed: %s)", list(addrsOf(next)), list(added), list(removed))
	}
}

func addrsOf(us []*upstream) []string {
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = u.addr
	}
	return out
}

func list(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// closeAll closes every connection proxied to u; the caller holds p.mu.
// The copy goroutines then remove their links from u.conns.
func closeAll(u *upstream) {
	for l := range u.conns {
		l.close()
	}
}

// current reports whether u is still in the list; the caller holds p.mu.
func (p *Proxy) current(u *upstream) bool {
	return slices.Contains(p.upstreams, u)
}

// Serve accepts client connections on ln and proxies each to an upstream,
// and runs a health round every CheckInterval, until ctx is done. It then
// closes ln and every proxied connection, waits for its goroutines, and
// returns nil; an accept error other than that returns the error. Call it
// once.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		// The first round comes after one interval: until then the
		// fallback order (every upstream in turn) serves.
		t := time.NewTicker(p.cfg.CheckInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				p.CheckNow(ctx)
			}
		}
	})
	wg.Go(func() {
		<-ctx.Done()
		ln.Close()
	})
	var err error
	for {
		c, aerr := ln.Accept()
		if aerr != nil {
			if ctx.Err() == nil {
				err = aerr
			}
			break
		}
		wg.Go(func() { p.handle(ctx, c) })
	}
	cancel()
	p.mu.Lock()
	p.closed = true
	for _, u := range p.upstreams {
		closeAll(u)
	}
	p.mu.Unlock()
	wg.Wait()
	return err
}

// handle proxies one client connection.
func (p *Proxy) handle(ctx context.Context, client net.Conn) {
	l, u := p.connect(ctx, client)
	if l == nil {
		client.Close()
		return
	}
	var wg sync.WaitGroup
	// Either direction ending (a close, a reset, an error) ends the
	// connection: a half-closed API connection is of no use to a client,
	// and closing both sides is what makes the other copy return.
	wg.Go(func() {
		io.Copy(l.server, l.client)
		l.close()
	})
	io.Copy(l.client, l.server)
	l.close()
	wg.Wait()
	p.mu.Lock()
	delete(u.conns, l)
	p.mu.Unlock()
}

// connect dials the candidates in order until one answers and registers
// the link with its upstream; it returns nil if none answered.
func (p *Proxy) connect(ctx context.Context, client net.Conn) (*link, *upstream) {
	cands := p.candidates()
	if len(cands) == 0 {
		p.cfg.Logf("no upstream answered client %s: the upstream list is empty", client.RemoteAddr())
		return nil, nil
	}
	d := net.Dialer{Timeout: p.cfg.DialTimeout}
	var errs []error
	for _, u := range cands {
		server, err := d.DialContext(ctx, "tcp", u.addr)
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil // shutting down
			}
			errs = append(errs, err)
			p.dialFailed(u, err)
			continue
		}
		l := &link{client: client, server: server}
		p.mu.Lock()
		ok := !p.closed && p.current(u)
		if ok {
			u.conns[l] = struct{}{}
		}
		p.mu.Unlock()
		if !ok {
			// Removed while we dialed, or shutting down.
			server.Close()
			return nil, nil
		}
		return l, u
	}
	p.cfg.Logf("no upstream answered client %s: %v", client.RemoteAddr(), errors.Join(errs...))
	return nil, nil
}

// candidates orders the upstreams for a new connection: the healthy ones
// by fewest active connections, then the unknown and down ones as a
// fallback. Both groups start at a rotating position, which breaks ties
// round-robin and spreads fallback dials.
func (p *Proxy) candidates() []*upstream {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.upstreams)
	if n == 0 {
		return nil
	}
	start := p.next % n
	p.next++
	var healthy, others []*upstream
	for i := range n {
		u := p.upstreams[(start+i)%n]
		if u.state == up {
			healthy = append(healthy, u)
		} else {
			others = append(others, u)
		}
	}
	slices.SortStableFunc(healthy, func(a, b *upstream) int { return len(a.conns) - len(b.conns) })
	return append(healthy, others...)
}

// dialFailed marks u down at once, so the next client does not wait for
// the same dial timeout. Its other connections stay: a dial can fail for
// reasons (a full backlog, one lost SYN) that leave them working, and the
// health check closes them if the master really is gone.
func (p *Proxy) dialFailed(u *upstream, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.current(u) {
		return
	}
	u.fails++
	if u.state != down {
		p.cfg.Logf("upstream %s down: dial: %v", u.addr, err)
		u.state = down
	}
}

// CheckNow runs one health round: a GET of /readyz on every upstream at
// once, returning when all have answered or timed out. Serve calls it
// every CheckInterval.
func (p *Proxy) CheckNow(ctx context.Context) {
	p.mu.Lock()
	ups := slices.Clone(p.upstreams)
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, u := range ups {
		wg.Go(func() {
			err := p.readyz(ctx, u.addr)
			if ctx.Err() != nil {
				return // shutting down, not a verdict on the upstream
			}
			p.record(u, err)
		})
	}
	wg.Wait()
}

// readyz asks addr's kube-apiserver whether it is ready. 401 and 403 count
// as ready: the server is alive and only refuses anonymous access (an API
// server started with --anonymous-auth=false, or without the RBAC rule
// that lets anyone read /readyz).
func (p *Proxy) readyz(ctx context.Context, addr string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := p.check.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	switch resp.StatusCode {
	case http.StatusOK, http.StatusUnauthorized, http.StatusForbidden:
		return nil
	}
	return errors.New("/readyz answered " + resp.Status)
}

// record applies one check's result to u. One success makes it healthy;
// FailAfter consecutive failures make it unhealthy and close its
// connections, once per failure streak, so clients (kubelet watches over
// long-lived HTTP/2 connections) reconnect through a healthy master at
// once instead of hanging on a dead one until TCP gives up. That also
// holds when a dial failure marked it down first: the connections it left
// open are closed when the check confirms the master is gone.
func (p *Proxy) record(u *upstream, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.current(u) {
		return
	}
	if err == nil {
		if u.state != up {
			p.cfg.Logf("upstream %s up (was %s)", u.addr, u.state)
		}
		u.state, u.fails, u.drained = up, 0, false
		return
	}
	u.fails++
	if u.fails < p.cfg.FailAfter || u.drained {
		return
	}
	if u.state != down {
		p.cfg.Logf("upstream %s down after %d failures: %v", u.addr, u.fails, err)
		u.state = down
	}
	if n := len(u.conns); n > 0 {
		p.cfg.Logf("upstream %s down: closing its %d connections", u.addr, n)
	}
	closeAll(u)
	u.drained = true
}
