package provision

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/charmbracelet/log"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/provision/ssh"
)

// Connector opens (or reuses) the connection to one inventory host. It is the
// boundary Gather's tests fake; PoolConnector is the real one.
type Connector interface {
	Connect(ctx context.Context, h *inventory.Host) (ssh.Executor, error)
}

// PoolConnector connects to hosts through an ssh.Pool with each host's
// SSHConfig, so facts and the apply that follows share one connection per host.
type PoolConnector struct {
	Pool      *ssh.Pool
	Inventory *inventory.Inventory
}

var _ Connector = (*PoolConnector)(nil)

// Connect maps h's ssh settings and connects through the pool.
func (c *PoolConnector) Connect(ctx context.Context, h *inventory.Host) (ssh.Executor, error) {
	cfg, err := SSHConfig(c.Inventory, h)
	if err != nil {
		return nil, err
	}
	cl, err := c.Pool.Connect(ctx, cfg)
	if err != nil {
		// Returned as a plain nil so callers' nil checks hold.
		return nil, err
	}
	return cl, nil
}

// GatherOptions tune Gather.
type GatherOptions struct {
	// Parallel bounds hosts probed at once; 0 means ssh.DefaultParallel.
	Parallel int
	// Files maps a host name to the paths whose SHA-256 the host's facts report.
	Files map[string][]string
	// EtcdTLS is kprov's etcd client TLS configuration (EtcdClientTLS); nil
	// skips reading the external etcd cluster's membership.
	EtcdTLS *tls.Config
	// EtcdTimeout bounds each etcd request (member list, one member's
	// status); 0 means DefaultEtcdTimeout.
	EtcdTimeout time.Duration
	// ProbeTimeout bounds each host's probe script; 0 means DefaultProbeTimeout.
	ProbeTimeout time.Duration
	// Logger receives progress at debug level and unreachable hosts as
	// warnings; nil discards.
	Logger *log.Logger
}

// Defaults for GatherOptions.
const (
	// DefaultProbeTimeout leaves room for `kubelet --version` on a slow disk;
	// the probe itself only reads a handful of small files.
	DefaultProbeTimeout = 60 * time.Second
	// DefaultEtcdTimeout is how long a member may take to answer before it
	// counts as unhealthy; etcd's own health check allows a few seconds.
	DefaultEtcdTimeout = 5 * time.Second
)

// probeMaxOutput bounds the probe's output: a few hundred bytes of facts, the
// base64 of the etcd config and one line per requested file.
const probeMaxOutput = 4 << 20

// probed is one host's outcome: its connection (nil when unreachable) and
// what its probe found.
type probed struct {
	host *inventory.Host
	exec ssh.Executor
	res  *probeResult
}

// Gather reads what is live on every host of inv, read-only: one probe script
// per host over conn (hosts in parallel within opts.Parallel), then, for an
// external etcd topology with opts.EtcdTLS set, the etcd member list and each
// member's status through SSH tunnels. See docs/facts.md.
//
// A host that cannot be reached (or probed) is recorded with Reachable false
// and why; that is not an error, because the planner decides whether the
// change needs that host. A host whose key does not match or is revoked is:
// Gather stops with those hosts' errors, since talking on could mean talking
// to an impostor. Gather does not close connections: they belong to conn,
// and an ssh.Pool keeps them for the apply that follows.
func Gather(ctx context.Context, inv *inventory.Inventory, conn Connector, opts GatherOptions) (*plan.Facts, error) {
	logger := opts.Logger
	if logger == nil {
		logger = log.New(io.Discard)
	}
	names := make([]string, len(inv.Hosts))
	for i, h := range inv.Hosts {
		names[i] = h.Name
	}
	dataDir := inv.Etcd.DataDir
	if dataDir == "" {
		dataDir = inventory.DefaultEtcdDataDir
	}
	timeout := opts.ProbeTimeout
	if timeout <= 0 {
		timeout = DefaultProbeTimeout
	}
	results, _ := ssh.ForEach(ctx, names, opts.Parallel, func(ctx context.Context, name string) (*probed, error) {
		h := inv.Host(name)
		return probeHost(ctx, conn, h, hostProbe{Files: opts.Files[name], EtcdConfig: plan.EtcdConfigPath, EtcdDataDir: dataDir,
			KubeletConf: plan.KubeletConfPath, APIServerManifest: plan.APIServerManifestPath, CNIBinDir: plan.CNIBinDir, Images: h.IsNode(), ImagesTimeout: timeout / 3}, timeout)
	})
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("gather facts: %w", err)
	}

	facts := &plan.Facts{Hosts: map[string]*plan.HostFacts{}, EtcdDataPresent: map[string]bool{}}
	etcdMember := map[string]bool{}
	for _, n := range inv.Topology.EtcdMembers {
		etcdMember[n] = true
	}
	for _, n := range inv.Topology.EtcdHosts {
		etcdMember[n] = true
	}
	var fatal []error
	hosts := map[string]*probed{}
	for _, r := range results {
		p := r.Value
		if p == nil { // ForEach recovered a panic before fn returned
			p = &probed{host: inv.Host(r.Host)}
		}
		hosts[r.Host] = p
		if r.Err != nil {
			if errors.Is(r.Err, ssh.ErrHostKeyMismatch) || errors.Is(r.Err, ssh.ErrHostKeyRevoked) {
				fatal = append(fatal, r.Err)
			}
			logger.Warn("host unreachable", "host", r.Host, "err", r.Err)
			facts.Hosts[r.Host] = &plan.HostFacts{Reachable: false, Error: withoutHost(r.Host, r.Err)}
			p.res = nil
			continue
		}
		logger.Debug("gathered host facts", "host", r.Host, "took", r.Duration.Round(time.Millisecond))
		facts.Hosts[r.Host] = p.res.Facts
		if etcdMember[r.Host] || p.res.EtcdData {
			facts.EtcdDataPresent[r.Host] = p.res.EtcdData
		}
	}
	if len(fatal) > 0 {
		return nil, fmt.Errorf("gather facts: %w", errors.Join(fatal...))
	}

	if inv.Topology.EtcdMode == inventory.EtcdExternal && opts.EtcdTLS != nil {
		g := &etcdGatherer{inv: inv, hosts: hosts, tls: opts.EtcdTLS, timeout: opts.EtcdTimeout, log: logger}
		if g.timeout <= 0 {
			g.timeout = DefaultEtcdTimeout
		}
		members, source, err := g.members(ctx)
		if err != nil {
			return nil, fmt.Errorf("gather facts: %w", err)
		}
		g.departing(ctx, conn, members, hostProbe{EtcdConfig: plan.EtcdConfigPath, EtcdDataDir: dataDir,
			KubeletConf: plan.KubeletConfPath, APIServerManifest: plan.APIServerManifestPath, CNIBinDir: plan.CNIBinDir}, timeout)
		facts.Etcd, facts.EtcdSource = members, source
	}
	return facts, nil
}

// probeHost connects to one host and runs the probe there.
func probeHost(ctx context.Context, conn Connector, h *inventory.Host, probe hostProbe, timeout time.Duration) (*probed, error) {
	p := &probed{host: h}
	script, err := probe.script()
	if err != nil {
		return p, err
	}
	ex, err := conn.Connect(ctx, h)
	if err != nil {
		return p, err
	}
	p.exec = ex
	res, err := ex.Run(ctx, ssh.Command{Cmd: "sh -s", Stdin: strings.NewReader(script), Timeout: timeout, MaxOutput: probeMaxOutput})
	if err != nil {
		return p, fmt.Errorf("probe: %w", err)
	}
	if res.Truncated {
		return p, fmt.Errorf("probe: output over %d bytes", probeMaxOutput)
	}
	if p.res, err = parseProbe(res.Stdout); err != nil {
		return p, fmt.Errorf("probe: %w", err)
	}
	return p, nil
}

// departing ties each healthy member on no inventory host to the machine
// at its peer URL's address (plan.EtcdMember.Departing), so a member that
// leaves the cluster can be stopped and wiped on its own machine: a live
// member replaced by another host in the inventory. The machine counts as
// the member's only when it is reached with the inventory's ssh settings
// (its host key known), runs etcd, and its etcd configuration advertises
// exactly that peer URL; the member itself answered as this cluster's
// member of that ID. A member that does not answer is left on no host:
// its address may be another machine's by now.
func (g *etcdGatherer) departing(ctx context.Context, conn Connector, members []plan.EtcdMember, probe hostProbe, timeout time.Duration) {
	for i := range members {
		m := &members[i]
		if m.Host != "" || !m.Healthy {
			continue
		}
		h := DepartingHost(*m)
		if h == nil {
			continue
		}
		p, err := probeHost(ctx, conn, h, probe, timeout)
		if err != nil {
			g.log.Warn("machine of an etcd member outside the inventory not reached; it is not stopped or wiped if the member is removed", "member", m.Name, "peer_url", m.PeerURL, "err", err)
			continue
		}
		if p.res.EtcdConfig == nil || parseEtcdConfigIdentity(p.res.EtcdConfig).PeerURL != m.PeerURL || p.res.Facts.Services["etcd"] != "active" {
			g.log.Warn("the machine at an etcd member's peer URL does not run that member; it is not stopped or wiped", "member", m.Name, "peer_url", m.PeerURL, "host", h.Name)
			continue
		}
		m.Host, m.Departing, m.HostReachable, m.Running = h.Name, true, true, true
		m.ConfigSHA256 = sha256Hex(p.res.EtcdConfig)
		m.ConfigCoreSHA256 = sha256Hex(plan.NormalizeEtcdConfig(p.res.EtcdConfig))
	}
}

// DepartingHost is the machine of an etcd member outside the inventory as
// a host kprov can connect to: the address of its peer URL, the
// inventory's ssh settings. Nil when the peer URL has no host part.
func DepartingHost(m plan.EtcdMember) *inventory.Host {
	u, err := url.Parse(m.PeerURL)
	if err != nil || u.Hostname() == "" {
		return nil
	}
	return &inventory.Host{Name: plan.DepartingHostName(m.Name, u.Hostname()), Address: u.Hostname(), Roles: []inventory.Role{inventory.RoleEtcd}}
}

// DepartingHosts are the machines of the facts' departing members that
// were reached: the hosts outside the inventory an apply may connect to.
func DepartingHosts(facts *plan.Facts) []*inventory.Host {
	var out []*inventory.Host
	for _, m := range facts.Etcd {
		if m.Departing && m.HostReachable {
			if h := DepartingHost(m); h != nil && h.Name == m.Host {
				out = append(out, h)
			}
		}
	}
	return out
}

// withoutHost renders err without the "host: " prefix the transport adds:
// the facts are already keyed by host.
func withoutHost(host string, err error) string {
	var he *ssh.HostError
	if !errors.As(err, &he) || he.Host != host {
		return err.Error()
	}
	// Only the prefix goes: what the layers above the transport added
	// ("create directories for uploads: ", "kubeadm config validate: ")
	// is the part that says what kprov was doing.
	return strings.Replace(err.Error(), he.Error(), he.Err.Error(), 1)
}
