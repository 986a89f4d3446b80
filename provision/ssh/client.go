package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/charmbracelet/log"
	"golang.org/x/crypto/ssh"
)

// Executor is everything the rest of kprov needs from a host. Tests of
// higher layers implement it with fakes; *Client implements it over SSH.
type Executor interface {
	// Run runs a shell command (as root, through sudo -n when needed).
	Run(ctx context.Context, cmd Command) (Result, error)
	// Upload writes a file atomically; changed is false when it already matched.
	Upload(ctx context.Context, f FileSpec) (changed bool, err error)
	// Download streams a remote file into w.
	Download(ctx context.Context, path string, w io.Writer) error
	// Checksum returns the hex SHA-256 of a remote file and whether it exists.
	Checksum(ctx context.Context, path string) (sum string, exists bool, err error)
	// Dial opens a TCP connection from the host, tunnelled through SSH.
	Dial(ctx context.Context, network, addr string) (net.Conn, error)
	// Close closes the host's connection.
	Close() error
	// Name is the inventory name of the host.
	Name() string
}

var _ Executor = (*Client)(nil)

// Options are the run-wide settings shared by every connection of a Pool.
type Options struct {
	Logger        *log.Logger    // nil discards
	Passphrase    PassphraseFunc // asks for encrypted keys' passphrases; nil fails such keys clearly
	AgentSocket   string         // usually $SSH_AUTH_SOCK; empty disables the agent
	SSHConfigFile string         // usually ~/.ssh/config; empty skips it
	Home          string         // expands ~ and %d in ssh config values
}

// Pool keeps one connection per host (and per bastion hop) for the whole run;
// every command, upload and tunnel to that host is a session on it.
type Pool struct {
	opts Options
	keys *keyring
	log  *log.Logger

	mu      sync.Mutex
	hosts   map[string]*entry[*Client]
	hops    map[string]*entry[*ssh.Client]
	hopList []*ssh.Client
	closed  bool
}

// entry lets concurrent callers for the same host wait for one dial instead of
// each opening their own connection.
type entry[T any] struct {
	ready chan struct{}
	val   T
	err   error
}

// NewPool returns an empty pool; Close it when the run ends.
func NewPool(opts Options) *Pool {
	l := opts.Logger
	if l == nil {
		l = log.New(io.Discard)
	}
	return &Pool{
		opts:  opts,
		keys:  &keyring{passphrase: opts.Passphrase, agentSock: opts.AgentSocket},
		log:   l,
		hosts: map[string]*entry[*Client]{},
		hops:  map[string]*entry[*ssh.Client]{},
	}
}

// Resolve applies ~/.ssh/config (when configured) and defaults to cfg.
func (p *Pool) Resolve(cfg Config) (Config, error) {
	if p.opts.SSHConfigFile != "" {
		var err error
		cfg, err = ApplySSHConfig(cfg, p.opts.SSHConfigFile, p.opts.Home)
		if err != nil {
			return cfg, err
		}
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return cfg, err
	}
	for _, b := range cfg.Bastions {
		if err := b.validate(); err != nil {
			return cfg, fmt.Errorf("bastion %q: %w", b.Host, err)
		}
	}
	return cfg, nil
}

// Connect returns the host's connection, dialling it (through its bastions)
// on first use. Errors are prefixed with the host name.
func (p *Pool) Connect(ctx context.Context, cfg Config) (*Client, error) {
	name := cfg.Host
	if name == "" {
		name = cfg.Address
	}
	cfg, err := p.Resolve(cfg)
	if err != nil {
		return nil, hostErr(name, err)
	}
	c, err := getOrDial(ctx, p, p.hosts, cfg.Host, func() (*Client, error) { return p.dialHost(ctx, cfg) })
	return c, hostErr(cfg.Host, err)
}

// getOrDial returns the cached value for key or runs dial once for all
// concurrent callers; failures are not cached so a later call can retry.
func getOrDial[T any](ctx context.Context, p *Pool, m map[string]*entry[T], key string, dial func() (T, error)) (T, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		var zero T
		return zero, errors.New("pool closed")
	}
	e, ok := m[key]
	if !ok {
		e = &entry[T]{ready: make(chan struct{})}
		m[key] = e
		p.mu.Unlock()
		e.val, e.err = dial()
		if e.err != nil {
			p.mu.Lock()
			delete(m, key)
			p.mu.Unlock()
		}
		close(e.ready)
		return e.val, e.err
	}
	p.mu.Unlock()
	select {
	case <-e.ready:
		return e.val, e.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

func (p *Pool) dialHost(ctx context.Context, cfg Config) (*Client, error) {
	var via *ssh.Client
	for i, hop := range cfg.Bastions {
		key := chainKey(cfg.Bastions[:i+1])
		prev := via
		var err error
		via, err = getOrDial(ctx, p, p.hops, key, func() (*ssh.Client, error) {
			c, err := p.dialHop(ctx, prev, hop)
			if err == nil {
				p.mu.Lock()
				p.hopList = append(p.hopList, c)
				p.mu.Unlock()
			}
			return c, err
		})
		if err != nil {
			return nil, fmt.Errorf("bastion %s: %w", hop.hostport(), err)
		}
	}
	conn, err := p.dialHop(ctx, via, cfg)
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, conn: conn, log: p.log.With("host", cfg.Host), pool: p}
	if cfg.User != "root" {
		if err := c.probeSudo(ctx); err != nil {
			conn.Close()
			return nil, err
		}
		c.sudo = true
	}
	return c, nil
}

// chainKey identifies a cached bastion connection by the whole path to it
// and, for every hop on that path, by everything that decided whether the
// hop was trusted: its known_hosts files, its host key policy and pinned
// key, and the identities it logged in with. Two hosts share a bastion
// connection only when each would have accepted it on its own terms. Keyed
// by user@host:port alone, whichever host dialled first decided how the
// bastion's key was checked: a strict host could then go through a bastion
// whose key an accept-new host had just recorded in another file, or that a
// host with a different pinned key had let through.
//
// Connection settings that do not bear on trust (timeouts, attempts) are
// left out, so hosts that differ only in patience still share the hop.
func chainKey(hops []Config) string {
	var b strings.Builder
	for _, h := range hops {
		// %q keeps the fields apart whatever a path or key contains.
		fmt.Fprintf(&b, "%q@%q policy=%q known_hosts=%q host_key=%q identities=%q;",
			h.User, h.hostport(), h.HostKeyPolicy, h.KnownHostsFiles, h.HostKey, h.IdentityFiles)
	}
	return b.String()
}

// dialHop connects to one hop, directly or through via, with bounded attempts.
func (p *Pool) dialHop(ctx context.Context, via *ssh.Client, hop Config) (*ssh.Client, error) {
	backoff := hop.RetryBackoff
	var err error
	attempt := 1
	for ; ; attempt++ {
		var c *ssh.Client
		c, err = p.dialOnce(ctx, via, hop)
		if err == nil {
			if hop.KeepAlive > 0 {
				go keepAlive(c, hop.KeepAlive, p.log.With("host", hop.Host))
			}
			return c, nil
		}
		if attempt >= hop.Attempts || !retryable(ctx, err) {
			break
		}
		p.log.Debug("connection attempt failed, retrying", "host", hop.Host, "attempt", attempt, "in", backoff, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("connect %s: %w (last error: %w)", hop.hostport(), ctx.Err(), err)
		case <-t.C:
		}
		backoff = min(backoff*2, 30*time.Second)
	}
	if attempt > 1 {
		return nil, fmt.Errorf("connect %s (%d attempts): %w", hop.hostport(), attempt, err)
	}
	return nil, fmt.Errorf("connect %s: %w", hop.hostport(), err)
}

// retryable says whether another attempt could succeed. A host that is still
// booting refuses connections, drops them, has no route yet, or rejects our
// key until cloud-init has written authorized_keys, so those are retried. A
// host key problem is never retried: it will not fix itself, and retrying a
// possible man-in-the-middle only hands them more attempts. Neither is
// having no key to offer at all, nor an attempt that waited its whole
// connect timeout: a host that has not answered in that long is down or
// behind a firewall that drops, and a second wait would only double what an
// unreachable host costs.
func retryable(ctx context.Context, err error) bool {
	var hk *HostKeyError
	var noKeys noKeysError
	switch {
	case errors.As(err, &hk), errors.Is(err, ErrHostKeyUnknown), errors.Is(err, ErrHostKeyMismatch), errors.Is(err, ErrHostKeyRevoked),
		errors.Is(err, ErrKeyFile), errors.Is(err, ErrSudo), errors.As(err, &noKeys), errors.Is(err, ErrTimeout):
		return false
	case ctx.Err() != nil:
		return false
	}
	return true
}

func (p *Pool) dialOnce(ctx context.Context, via *ssh.Client, hop Config) (*ssh.Client, error) {
	v, err := newHostKeyVerifier(hop, p.log)
	if err != nil {
		return nil, err
	}
	signers, err := p.keys.signersFor(hop.IdentityFiles)
	if err != nil {
		return nil, err
	}
	if len(signers) == 0 {
		return nil, noKeysError{}
	}
	// The host key error is kept aside because x/crypto wraps it in its
	// handshake error; returning it directly keeps the typed error.
	var keyErr error
	cc := &ssh.ClientConfig{
		User: hop.User,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signers...)},
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			keyErr = v.check(hostname, remote, key)
			return keyErr
		},
		HostKeyAlgorithms: v.hostKeyAlgorithms(),
		ClientVersion:     "SSH-2.0-kprov",
	}
	addr := hop.hostport()
	actx, cancel := context.WithTimeout(ctx, hop.ConnectTimeout)
	defer cancel()
	var conn net.Conn
	if via == nil {
		var d net.Dialer
		conn, err = d.DialContext(actx, "tcp", addr)
	} else {
		conn, err = via.DialContext(actx, "tcp", addr)
	}
	if err != nil {
		return nil, timeoutErr(ctx, actx, hop, err)
	}
	// Tunnelled connections do not support deadlines, so the handshake is
	// bounded by closing the connection when the attempt's context ends.
	stop := context.AfterFunc(actx, func() { conn.Close() })
	sc, chans, reqs, err := ssh.NewClientConn(conn, addr, cc)
	if !stop() {
		if sc != nil {
			sc.Close()
		}
		return nil, timeoutErr(ctx, actx, hop, actx.Err())
	}
	if err != nil {
		conn.Close()
		if keyErr != nil {
			return nil, keyErr
		}
		if strings.Contains(err.Error(), "unable to authenticate") {
			return nil, fmt.Errorf("%w as %q with %d key(s): %v", ErrAuthFailed, hop.User, len(signers), err)
		}
		return nil, err
	}
	return ssh.NewClient(sc, chans, reqs), nil
}

// timeoutErr distinguishes our own attempt deadline from the caller's
// cancellation, so that only the former reads as a timeout.
func timeoutErr(ctx, actx context.Context, hop Config, err error) error {
	if ctx.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w after %s: %w", ErrTimeout, hop.ConnectTimeout, err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// keepAlive probes the connection so that a host that vanished (power off,
// cut network) fails its commands within a few intervals instead of hanging
// on TCP timeouts; it also keeps NAT and firewall state alive on idle runs.
func keepAlive(c *ssh.Client, interval time.Duration, l *log.Logger) {
	done := make(chan struct{})
	go func() {
		_ = c.Wait()
		close(done)
	}()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		reply := make(chan error, 1)
		go func() {
			_, _, err := c.SendRequest("keepalive@openssh.com", true, nil)
			reply <- err
		}()
		// Like OpenSSH's ServerAliveCountMax=3: three intervals unanswered
		// and the connection is declared dead.
		dead := time.NewTimer(3 * interval)
		select {
		case err := <-reply:
			dead.Stop()
			if err != nil {
				return
			}
		case <-done:
			dead.Stop()
			return
		case <-dead.C:
			l.Warn("host stopped answering keepalives, closing its connection")
			c.Close()
			return
		}
	}
}

// Client is one host's connection. It is safe for concurrent use: every
// operation is its own SSH session on the shared connection.
type Client struct {
	cfg  Config
	conn *ssh.Client
	log  *log.Logger
	pool *Pool
	sudo bool
}

// Name returns the inventory name of the host.
func (c *Client) Name() string { return c.cfg.Host }

// Config returns the resolved configuration the client connected with.
func (c *Client) Config() Config { return c.cfg }

// Close closes the host's connection and forgets it in its pool. Bastion
// connections stay open for other hosts until the pool closes.
func (c *Client) Close() error {
	if c.pool != nil {
		c.pool.mu.Lock()
		if e, ok := c.pool.hosts[c.cfg.Host]; ok && e.val == c {
			delete(c.pool.hosts, c.cfg.Host)
		}
		c.pool.mu.Unlock()
	}
	err := c.conn.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Dial opens a connection from the host to addr through the SSH connection
// (direct-tcpip), e.g. to the host's etcd client port bound to localhost.
func (c *Client) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	conn, err := c.conn.DialContext(ctx, network, addr)
	if err != nil {
		return nil, hostErr(c.cfg.Host, fmt.Errorf("forward to %s: %w", addr, err))
	}
	return conn, nil
}

// Close closes every host and bastion connection and the agent connection.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	var clients []*Client
	for _, e := range p.hosts {
		select {
		case <-e.ready:
			if e.err == nil {
				clients = append(clients, e.val)
			}
		default:
		}
	}
	p.hosts = map[string]*entry[*Client]{}
	hops := p.hopList
	p.hopList = nil
	p.mu.Unlock()
	var errs []error
	for _, c := range clients {
		if err := c.conn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, hostErr(c.cfg.Host, err))
		}
	}
	// Innermost hops first: they are tunnelled through the outer ones.
	for i := len(hops) - 1; i >= 0; i-- {
		if err := hops[i].Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, p.keys.close())
	return errors.Join(errs...)
}
