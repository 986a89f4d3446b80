package provision

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
)

// etcdTestAddrs are loopback addresses for the test members. etcd's ports
// are fixed at 2379/2380 in the peer URLs kprov matches members by, so each
// member gets its own address; unusual ones make a clash with a real etcd
// on 127.0.0.1 unlikely.
var etcdTestAddrs = []string{"127.83.0.1", "127.83.0.2", "127.83.0.3", "127.83.0.4"}

// testMember is an embedded etcd member; Stop may be called more than once.
type testMember struct {
	*embed.Etcd
	Stop func()
}

// startMember starts one embedded etcd member with the TLS material
// pki.Ensure issued for it, listening on addr:2379 and addr:2380.
func startMember(t *testing.T, state string, name, addr, initialCluster, clusterState string) testMember {
	t.Helper()
	return startMemberAs(t, state, name, name, addr, initialCluster, clusterState)
}

// startMemberAs starts a member with the TLS material of the host certsOf
// under the etcd name name, which need not be its host's.
func startMemberAs(t *testing.T, state string, certsOf, name, addr, initialCluster, clusterState string) testMember {
	t.Helper()
	member := filepath.Join(state, "pki", "etcd", "members", certsOf)
	ca := filepath.Join(state, "pki", "etcd", "ca.crt")
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = t.TempDir()
	peer := url.URL{Scheme: "https", Host: net.JoinHostPort(addr, "2380")}
	client := url.URL{Scheme: "https", Host: net.JoinHostPort(addr, "2379")}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.InitialCluster, cfg.ClusterState, cfg.InitialClusterToken = initialCluster, clusterState, "kprov-gather-test"
	cfg.ClientTLSInfo = transport.TLSInfo{CertFile: filepath.Join(member, "server.crt"), KeyFile: filepath.Join(member, "server.key"),
		TrustedCAFile: ca, ClientCertAuth: true}
	cfg.PeerTLSInfo = transport.TLSInfo{CertFile: filepath.Join(member, "peer.crt"), KeyFile: filepath.Join(member, "peer.key"),
		TrustedCAFile: ca, ClientCertAuth: true}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// Short heartbeats keep elections (and so the test) fast.
	cfg.TickMs, cfg.ElectionMs = 20, 200
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		if strings.Contains(err.Error(), "address already in use") {
			t.Skipf("%s: etcd ports on %s are taken: %v", name, addr, err)
		}
		t.Fatalf("start %s: %v", name, err)
	}
	m := testMember{Etcd: e, Stop: sync.OnceFunc(e.Close)}
	t.Cleanup(m.Stop)
	return m
}

// testEtcdTLS issues the PKI for req in state and returns kprov's etcd
// client configuration from it.
func testEtcdTLS(t *testing.T, state string, req pki.Request) *tls.Config {
	t.Helper()
	st, _, err := pki.Ensure(state, req, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := EtcdClientTLS(st)
	if err != nil {
		t.Fatal(err)
	}
	return tlsCfg
}

func waitReady(t *testing.T, es ...testMember) {
	t.Helper()
	for _, e := range es {
		select {
		case <-e.Server.ReadyNotify():
		case err := <-e.Err():
			t.Fatalf("etcd: %v", err)
		case <-time.After(time.Minute):
			t.Fatal("etcd member not ready after a minute")
		}
	}
}

// TestGatherLiveEtcd runs Gather against a real etcd 3.6 cluster over TLS:
// three voters (one of them stopped) and a learner, every client connection
// tunnelled through the fake host whose address it targets. The learner on
// etcd-4's address calls itself "etcd-2", the name of a healthy member: each
// member is tied to the host its peer URL names, never to the one its name
// suggests (RELIABILITY 19).
func TestGatherLiveEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real etcd cluster")
	}
	state := filepath.Join(t.TempDir(), "state") // Ensure creates it 0700
	var req pki.Request
	inv := &inventory.Inventory{Etcd: inventory.Etcd{DataDir: "/var/lib/etcd"},
		Topology: inventory.Topology{EtcdMode: inventory.EtcdExternal}}
	for i, addr := range etcdTestAddrs {
		name := fmt.Sprintf("etcd-%d", i+1)
		req.EtcdMembers = append(req.EtcdMembers, pki.Member{Name: name, Address: addr})
		inv.Hosts = append(inv.Hosts, &inventory.Host{Name: name, Address: addr, Roles: []inventory.Role{inventory.RoleEtcd}})
		inv.Topology.EtcdHosts = append(inv.Topology.EtcdHosts, name)
	}
	inv.Topology.EtcdMembers = inv.Topology.EtcdHosts
	tlsCfg := testEtcdTLS(t, state, req)

	var initial []string
	for i, addr := range etcdTestAddrs[:3] {
		initial = append(initial, fmt.Sprintf("etcd-%d=%s", i+1, plan.EtcdPeerURL(addr)))
	}
	var voters []testMember
	for i, addr := range etcdTestAddrs[:3] {
		voters = append(voters, startMember(t, state, fmt.Sprintf("etcd-%d", i+1), addr, strings.Join(initial, ","), embed.ClusterStateFlagNew))
	}
	waitReady(t, voters...)

	// etcd-4 joins as a learner, the way kprov adds members.
	direct, err := clientv3.New(clientv3.Config{Endpoints: []string{plan.EtcdClientURL(etcdTestAddrs[0])}, TLS: tlsCfg.Clone(),
		DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute) // generous: the race detector and a loaded machine slow etcd down
	defer cancel()
	// etcd refuses membership changes until the voters have been connected
	// for its health interval (5 s): "unhealthy cluster" is retried.
	for {
		_, err := direct.MemberAddAsLearner(ctx, []string{plan.EtcdPeerURL(etcdTestAddrs[3])})
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "unhealthy cluster") || ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	// etcd matches an initial cluster to the live one by peer URLs, so the
	// other members may be listed under any name but the learner's own.
	learnerCluster := []string{initial[0], "other-2=" + plan.EtcdPeerURL(etcdTestAddrs[1]), initial[2], "etcd-2=" + plan.EtcdPeerURL(etcdTestAddrs[3])}
	learner := startMemberAs(t, state, "etcd-4", "etcd-2", etcdTestAddrs[3], strings.Join(learnerCluster, ","), embed.ClusterStateFlagExisting)
	waitReady(t, learner)

	// etcd-3 stops; two of three voters keep quorum.
	stoppedID := uint64(voters[2].Server.MemberID())
	voters[2].Stop()
	if _, err := direct.Get(ctx, "quorum-check"); err != nil { // linearizable: needs a leader and quorum
		t.Fatal(err)
	}

	cfg3 := etcdConfig("etcd-3", etcdTestAddrs[2], strings.Join(initial, ","), "new")
	var mu sync.Mutex
	dialled := map[string][]string{}
	hosts := map[string]*fakeHost{}
	for i, addr := range etcdTestAddrs {
		name := fmt.Sprintf("etcd-%d", i+1)
		lines := append(freshHost(name), "etcd_data=yes", "service.etcd=active")
		if name == "etcd-3" {
			lines = append(lines, "service.etcd=inactive", "etcd_config="+b64(cfg3))
		}
		f := newFakeHost(t, name, probeRun(t, name, nil, lines...))
		// A tunnel from a host goes only to that host's own etcd: Gather
		// must ask each member through its own host.
		f.dial = func(ctx context.Context, network, target string) (net.Conn, error) {
			mu.Lock()
			dialled[name] = append(dialled[name], target)
			mu.Unlock()
			if target != net.JoinHostPort(addr, "2379") {
				t.Errorf("%s: tunnel to %s, want only its own client port", name, target)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, target)
		}
		hosts[name] = f
	}

	start := time.Now()
	facts, err := Gather(ctx, inv, &fakeConnector{t: t, hosts: hosts}, GatherOptions{EtcdTLS: tlsCfg, EtcdTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Gather took %s", time.Since(start).Round(time.Millisecond))
	if facts.EtcdSource != plan.EtcdSourceLive || len(facts.Etcd) != 4 {
		t.Fatalf("etcd from %q: %+v", facts.EtcdSource, facts.Etcd)
	}
	byHost := map[string]plan.EtcdMember{}
	leaders := 0
	for _, m := range facts.Etcd {
		if _, dup := byHost[m.Host]; dup {
			t.Errorf("two members tied to host %q", m.Host)
		}
		byHost[m.Host] = m
		if m.Leader {
			leaders++
		}
		if m.ID == 0 || !m.HostReachable {
			t.Errorf("%s: id %x, host reachable %v", m.Name, m.ID, m.HostReachable)
		}
	}
	for i, addr := range etcdTestAddrs {
		host := fmt.Sprintf("etcd-%d", i+1)
		m, ok := byHost[host]
		if !ok {
			t.Errorf("no member tied to host %s", host)
			continue
		}
		wantName := host
		if host == "etcd-4" {
			wantName = "etcd-2" // what the learner calls itself
		}
		if m.PeerURL != plan.EtcdPeerURL(addr) || m.Name != wantName {
			t.Errorf("member on %s: peer URL %s, name %q; want %s, %q", host, m.PeerURL, m.Name, plan.EtcdPeerURL(addr), wantName)
		}
		wantLearner, wantUp := host == "etcd-4", host != "etcd-3"
		if m.Learner != wantLearner || m.Healthy != wantUp || m.Running != wantUp {
			t.Errorf("%s: learner %v healthy %v running %v; want %v %v %v", host, m.Learner, m.Healthy, m.Running, wantLearner, wantUp, wantUp)
		}
		// The version the process reports, which the planner compares with
		// the host's binary; a member that does not answer has none.
		if wantVersion := map[bool]string{true: version.Version, false: ""}[wantUp]; m.Version != wantVersion {
			t.Errorf("%s: version %q, want %q", host, m.Version, wantVersion)
		}
	}
	if m := byHost["etcd-3"]; m.ID != stoppedID || m.Leader || m.ConfigSHA256 != sha256Hex([]byte(cfg3)) ||
		m.ConfigCoreSHA256 != sha256Hex(plan.NormalizeEtcdConfig([]byte(cfg3))) {
		t.Errorf("stopped etcd-3: %+v", m)
	}
	status, err := direct.Status(ctx, plan.EtcdClientURL(etcdTestAddrs[0]))
	if err != nil {
		t.Fatal(err)
	}
	if leaders != 1 {
		t.Errorf("%d leaders, want 1", leaders)
	}
	for _, m := range facts.Etcd {
		if m.Leader && (m.ID != status.Leader || m.Learner) {
			t.Errorf("leader %s (%x); etcd-1 follows %x", m.Name, m.ID, status.Leader)
		}
	}
	for _, name := range []string{"etcd-1", "etcd-2", "etcd-3", "etcd-4"} {
		if !slices.Contains(dialled[name], net.JoinHostPort(hosts[name].dialAddr(inv), "2379")) {
			t.Errorf("%s: no tunnel through its own host (tunnels: %v)", name, dialled)
		}
	}
}

// dialAddr is the inventory address of the fake's host.
func (f *fakeHost) dialAddr(inv *inventory.Inventory) string { return inv.Host(f.name).Address }
