package provision

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/charmbracelet/log"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/provision/ssh"
)

// EtcdClientTLS is the TLS configuration kprov talks to external etcd with:
// the healthcheck client certificate, trusting only the etcd CA.
func EtcdClientTLS(s *pki.State) (*tls.Config, error) {
	if s.EtcdHealthcheckClient == nil || s.EtcdCA == nil {
		return nil, errors.New("the state directory has no etcd client certificate (pki not ensured)")
	}
	roots := x509.NewCertPool()
	roots.AddCert(s.EtcdCA.Cert)
	return &tls.Config{
		Certificates: []tls.Certificate{s.EtcdHealthcheckClient.TLSCertificate()},
		RootCAs:      roots,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// etcdGatherer reads the external etcd cluster through the hosts' SSH
// connections; etcd's ports need not be reachable from the operator.
type etcdGatherer struct {
	inv     *inventory.Inventory
	hosts   map[string]*probed
	tls     *tls.Config
	timeout time.Duration
	log     *log.Logger
}

// reachable returns the host's probe when it was reached and probed.
func (g *etcdGatherer) reachable(name string) *probed {
	if p := g.hosts[name]; p != nil && p.res != nil && p.exec != nil {
		return p
	}
	return nil
}

// members returns the live member list and where it came from: the first
// etcd host with an active service that answers MemberList, or, when none
// does, the member configs on hosts that hold etcd data (fromConfigs).
func (g *etcdGatherer) members(ctx context.Context) ([]plan.EtcdMember, string, error) {
	members := g.liveVia(ctx, g.inv.Topology.EtcdHosts, func(p *probed) bool { return p.res.Facts.Services["etcd"] == "active" })
	if members != nil {
		return members, plan.EtcdSourceLive, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	members = g.fromConfigs()
	if len(members) == 0 {
		return nil, "", nil
	}
	g.log.Warn("no etcd member answered; member list rebuilt from config files", "members", len(members))
	return members, plan.EtcdSourceConfig, nil
}

// GatherStackedEtcd reads the masters' stacked etcd members into facts
// (stackedMembers), through the masters facts found reachable. The
// pipeline calls it only when the API lists a master the inventory no
// longer has: nothing else in a stacked plan needs the member list.
func GatherStackedEtcd(ctx context.Context, inv *inventory.Inventory, conn Connector, facts *plan.Facts, tlsCfg *tls.Config, logger *log.Logger) {
	hosts := map[string]*probed{}
	for _, name := range inv.Topology.Masters {
		h, hf := inv.Host(name), facts.Hosts[name]
		if hf == nil || !hf.Reachable {
			continue
		}
		ex, err := conn.Connect(ctx, h)
		if err != nil {
			logger.Warn("stacked etcd: master unreachable", "host", name, "err", err)
			continue
		}
		hosts[name] = &probed{host: h, exec: ex, res: &probeResult{Facts: hf}}
	}
	g := &etcdGatherer{inv: inv, hosts: hosts, tls: tlsCfg, timeout: DefaultEtcdTimeout, log: logger}
	if members := g.stackedMembers(ctx); members != nil {
		facts.Etcd, facts.EtcdSource = members, plan.EtcdSourceLive
	}
}

// stackedMembers reads the masters' stacked etcd members, live, through
// the first master whose control plane runs and whose etcd answers; nil
// when none does (no control plane yet). Stacked etcd runs as a static
// pod, not a service, so a member that answers counts as running.
func (g *etcdGatherer) stackedMembers(ctx context.Context) []plan.EtcdMember {
	members := g.liveVia(ctx, g.inv.Topology.Masters, func(p *probed) bool { return p.res.Facts.ControlPlane })
	for i := range members {
		members[i].Running = members[i].Healthy
	}
	return members
}

// liveVia returns the live member list with each member's status, read
// through the first of hosts that was reached, serves etcd (serves), and
// answers MemberList; nil when none does.
func (g *etcdGatherer) liveVia(ctx context.Context, hosts []string, serves func(*probed) bool) []plan.EtcdMember {
	for _, name := range hosts {
		p := g.reachable(name)
		if p == nil || !serves(p) {
			continue
		}
		cli, err := g.client(ctx, p)
		if err != nil {
			g.log.Warn("etcd client", "host", name, "err", err)
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, g.timeout)
		// Linearizable (the default): a member cut off from quorum must not
		// hand the planner a stale member list.
		list, err := cli.MemberList(lctx)
		cancel()
		if err != nil {
			cli.Close()
			if ctx.Err() != nil {
				return nil
			}
			g.log.Warn("etcd member list failed", "host", name, "err", err)
			continue
		}
		g.log.Debug("etcd member list", "via", name, "members", len(list.Members))
		members := g.withStatus(ctx, cli, list)
		cli.Close()
		return members
	}
	return nil
}

// client opens an etcd client whose every connection is tunnelled through
// SSH: to a member's address through that member's own host (so its status
// says whether it answers on its own host), to anything else through via.
// Connecting is lazy; nothing is dialled until the first request.
func (g *etcdGatherer) client(ctx context.Context, via *probed) (*clientv3.Client, error) {
	byAddr := map[string]ssh.Executor{}
	for _, h := range g.inv.Hosts {
		if p := g.reachable(h.Name); p != nil {
			byAddr[h.Address] = p.exec
		}
	}
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		ex := via.exec
		if host, _, err := net.SplitHostPort(addr); err == nil && byAddr[host] != nil {
			ex = byAddr[host]
		}
		return ex.Dial(ctx, "tcp", addr)
	}
	return clientv3.New(etcdClientConfig(ctx, []string{plan.EtcdClientURL(via.host.Address)}, g.tls, g.timeout, dial))
}

// withStatus joins the member list with each member's status (asked of the
// member itself, all at once so a dead member costs one timeout, not one
// each) and with its host's facts.
func (g *etcdGatherer) withStatus(ctx context.Context, cli *clientv3.Client, list *clientv3.MemberListResponse) []plan.EtcdMember {
	clusterID := list.Header.GetClusterId()
	byPeer := g.byPeerURL()
	out := make([]plan.EtcdMember, len(list.Members))
	statuses := make([]*clientv3.StatusResponse, len(list.Members))
	var wg sync.WaitGroup
	for i, m := range list.Members {
		em := plan.EtcdMember{ID: m.ID, Name: m.Name, Learner: m.IsLearner}
		if len(m.PeerURLs) > 0 {
			em.PeerURL = m.PeerURLs[0]
		}
		h := g.attach(&em, byPeer, m.PeerURLs)
		if em.Name == "" && h != nil {
			// A learner added but not started yet has no name; kprov
			// names members after their hosts.
			em.Name = h.Name
		}
		out[i] = em
		ep := statusEndpoint(m.ClientURLs, h)
		if ep == "" {
			continue // never started: it has no client URL to ask
		}
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, g.timeout)
			defer cancel()
			st, err := cli.Status(sctx, ep)
			if err != nil {
				g.log.Debug("etcd member status failed", "member", em.Name, "endpoint", ep, "err", err)
				return
			}
			statuses[i] = st
		})
	}
	wg.Wait()

	// Every member reports the leader it follows; the one with the highest
	// term is the current one (a member cut off may still name an old one).
	var leader, term uint64
	for _, st := range statuses {
		if st != nil && st.RaftTerm >= term {
			leader, term = st.Leader, st.RaftTerm
		}
	}
	for i := range out {
		st := statuses[i]
		// A member that answers for another cluster (a data directory from
		// an earlier life) or as another member is not this member healthy.
		out[i].Healthy = st != nil && st.Header.GetClusterId() == clusterID && st.Header.GetMemberId() == out[i].ID
		out[i].Leader = leader != 0 && out[i].ID == leader
		if out[i].Healthy {
			// What the process runs, not what its host's binary is: the
			// planner restarts a member whose process lags its binary.
			out[i].Version = st.Version
		}
		if !out[i].HostReachable && out[i].Healthy {
			// Not one of the inventory's hosts (or its host is unreachable):
			// answering is the only sign it runs.
			out[i].Running = true
		}
	}
	return out
}

// statusEndpoint picks the client URL to ask a member for its status: the
// one on its own host's address when there is one.
func statusEndpoint(clientURLs []string, h *inventory.Host) string {
	if h != nil {
		for _, u := range clientURLs {
			if pu, err := url.Parse(u); err == nil && pu.Hostname() == h.Address {
				return u
			}
		}
	}
	if len(clientURLs) > 0 {
		return clientURLs[0]
	}
	return ""
}

// fromConfigs rebuilds the member list when no member answered, most often
// a cold start after a power loss, so the planner starts the members
// together instead of taking the hosts for fresh ones and bootstrapping a
// second cluster over their data.
//
// A host is a member when its data directory holds etcd data; its name and
// peer URL come from its config file. Members listed in those configs'
// initial-cluster but not found that way (their host unreachable, or
// without data) are added too, so a cluster with one host down is not
// mistaken for a smaller one. What cannot be known without a live member is
// left at its zero value: ID 0, Learner false (a learner looks like a voter
// here), Leader and Healthy false.
func (g *etcdGatherer) fromConfigs() []plan.EtcdMember {
	var out []plan.EtcdMember
	seen := map[string]bool{}
	listed := map[string]string{} // peer URL -> name, from initial-cluster
	byPeer := g.byPeerURL()
	for _, h := range g.inv.Hosts {
		p := g.reachable(h.Name)
		if p == nil || !p.res.EtcdData || p.res.EtcdConfig == nil {
			continue
		}
		id := parseEtcdConfigIdentity(p.res.EtcdConfig)
		m := plan.EtcdMember{Name: id.Name, PeerURL: id.PeerURL}
		if m.PeerURL == "" {
			m.PeerURL = plan.EtcdPeerURL(h.Address)
		}
		if seen[m.PeerURL] {
			continue
		}
		seen[m.PeerURL] = true
		// The member is tied to the host its peer URL names, which is
		// not always the host whose disk holds the config (a host whose
		// address changed, or a data directory copied from elsewhere).
		if g.attach(&m, byPeer, []string{m.PeerURL}); m.Host != h.Name {
			g.log.Warn("etcd config names a peer URL that is not its host's", "host", h.Name, "address", h.Address, "peer_url", m.PeerURL, "tied_to", m.Host)
		}
		if m.Name == "" {
			m.Name = cmp.Or(m.Host, h.Name)
		}
		out = append(out, m)
		for n, u := range id.InitialCluster {
			listed[u] = n
		}
	}
	var extra []plan.EtcdMember
	for u, n := range listed {
		if seen[u] {
			continue
		}
		m := plan.EtcdMember{Name: n, PeerURL: u}
		g.attach(&m, byPeer, []string{u})
		extra = append(extra, m)
	}
	// Map order must not leak into the facts (their digest is compared).
	slices.SortFunc(extra, func(a, b plan.EtcdMember) int { return strings.Compare(a.PeerURL, b.PeerURL) })
	return append(out, extra...)
}

// byPeerURL maps the etcd peer URL kprov gives a member on each inventory
// host (https://ADDRESS:2380) to that host.
func (g *etcdGatherer) byPeerURL() map[string]*inventory.Host {
	byPeer := map[string]*inventory.Host{}
	for _, h := range g.inv.Hosts {
		byPeer[plan.EtcdPeerURL(h.Address)] = h
	}
	return byPeer
}

// attach ties a member to the inventory host whose peer URL is exactly one
// of the member's, and records what that host says about it: its Host,
// whether the host was reached, whether etcd runs there, and the hashes of
// its config. The member's self-reported name plays no part: a stale member
// may carry the name of a healthy one on another host, and every step kprov
// addresses to a member's host (stop, wipe) goes to m.Host (RELIABILITY 19).
//
// Only an exact match counts: a prefix or substring match once tied
// 10.20.0.2 to 10.20.0.21 and removed the wrong member elsewhere. A member
// whose peer URLs name two inventory hosts is tied to neither, since nothing
// says which one holds it. It returns the host, or nil.
func (g *etcdGatherer) attach(m *plan.EtcdMember, byPeer map[string]*inventory.Host, peerURLs []string) *inventory.Host {
	var h *inventory.Host
	var peer string
	for _, u := range peerURLs {
		x := byPeer[u]
		switch {
		case x == nil || x == h:
		case h != nil:
			g.log.Warn("etcd member's peer URLs name two inventory hosts; it is tied to neither", "member", m.Name, "hosts", h.Name+", "+x.Name)
			return nil
		default:
			h, peer = x, u
		}
	}
	if h == nil {
		return nil
	}
	m.Host, m.PeerURL = h.Name, peer
	if p := g.reachable(h.Name); p != nil {
		m.HostReachable, m.Running = true, p.res.Facts.Services["etcd"] == "active"
		if p.res.EtcdConfig != nil {
			m.ConfigSHA256 = sha256Hex(p.res.EtcdConfig)
			m.ConfigCoreSHA256 = sha256Hex(plan.NormalizeEtcdConfig(p.res.EtcdConfig))
		}
	}
	return h
}
