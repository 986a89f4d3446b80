package provision

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
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
		p := &probed{host: h}
		probe := hostProbe{Files: opts.Files[name], EtcdConfig: plan.EtcdConfigPath, EtcdDataDir: dataDir,
			KubeletConf: plan.KubeletConfPath, APIServerManifest: plan.APIServerManifestPath, CNIBinDir: plan.CNIBinDir, Images: h.IsNode()}
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
		facts.Etcd, facts.EtcdSource = members, source
	}
	return facts, nil
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
