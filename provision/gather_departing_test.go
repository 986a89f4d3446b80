package provision

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
)

// TestGatherDepartingMember: a healthy member the inventory no longer lists
// (a live member being replaced) is tied to the machine at its peer URL's
// address, reached with the inventory's ssh settings, only when that
// machine runs etcd with a configuration advertising exactly that peer
// URL; otherwise it stays on no host, so nothing is stopped or wiped there.
func TestGatherDepartingMember(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real etcd cluster")
	}
	state := filepath.Join(t.TempDir(), "state")
	addrs := etcdTestAddrs[:2]
	var req pki.Request
	for i, addr := range addrs {
		req.EtcdMembers = append(req.EtcdMembers, pki.Member{Name: fmt.Sprintf("etcd-%d", i+1), Address: addr})
	}
	tlsCfg := testEtcdTLS(t, state, req)
	initial := fmt.Sprintf("etcd-1=%s,etcd-2=%s", plan.EtcdPeerURL(addrs[0]), plan.EtcdPeerURL(addrs[1]))
	waitReady(t, startMember(t, state, "etcd-1", addrs[0], initial, embed.ClusterStateFlagNew),
		startMember(t, state, "etcd-2", addrs[1], initial, embed.ClusterStateFlagNew))

	// The inventory has only etcd-1: etcd-2 is leaving it.
	inv := &inventory.Inventory{Etcd: inventory.Etcd{DataDir: "/var/lib/etcd"},
		Hosts:    []*inventory.Host{{Name: "etcd-1", Address: addrs[0], Roles: []inventory.Role{inventory.RoleEtcd}}},
		Topology: inventory.Topology{EtcdMode: inventory.EtcdExternal, EtcdHosts: []string{"etcd-1"}, EtcdMembers: []string{"etcd-1"}}}
	machine := plan.DepartingHostName("etcd-2", addrs[1])
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	gather := func(t *testing.T, departing *fakeHost, connectErr error) plan.EtcdMember {
		t.Helper()
		via := newFakeHost(t, "etcd-1", probeRun(t, "etcd-1", nil, append(freshHost("etcd-1"), "etcd_data=yes", "service.etcd=active")...))
		via.dial = func(ctx context.Context, network, target string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, target)
		}
		conn := &fakeConnector{t: t, hosts: map[string]*fakeHost{"etcd-1": via}, errs: map[string]error{}}
		if departing != nil {
			conn.hosts[machine] = departing
		}
		if connectErr != nil {
			conn.errs[machine] = connectErr
		}
		facts, err := Gather(ctx, inv, conn, GatherOptions{EtcdTLS: tlsCfg, EtcdTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range facts.Etcd {
			if m.PeerURL == plan.EtcdPeerURL(addrs[1]) {
				if !m.Healthy {
					t.Fatalf("etcd-2 not healthy: %+v", m)
				}
				return m
			}
		}
		t.Fatalf("no member at %s in %+v", addrs[1], facts.Etcd)
		return plan.EtcdMember{}
	}

	t.Run("its machine runs it", func(t *testing.T) {
		cfg := etcdConfig("etcd-2", addrs[1], initial, "new")
		m := gather(t, newFakeHost(t, machine, probeRun(t, machine, nil, append(freshHost("etcd-2"), "etcd_data=yes", "service.etcd=active", "etcd_config="+b64(cfg))...)), nil)
		if m.Host != machine || !m.Departing || !m.HostReachable || !m.Running || m.ConfigSHA256 != sha256Hex([]byte(cfg)) {
			t.Errorf("etcd-2: %+v, want it tied to its machine %s", m, machine)
		}
		hs := DepartingHosts(&plan.Facts{Etcd: []plan.EtcdMember{m}})
		if len(hs) != 1 || hs[0].Name != machine || hs[0].Address != addrs[1] {
			t.Errorf("departing hosts %+v", hs)
		}
	})
	t.Run("another etcd at its address", func(t *testing.T) {
		cfg := etcdConfig("etcd-2", "10.9.9.9", initial, "new")
		m := gather(t, newFakeHost(t, machine, probeRun(t, machine, nil, append(freshHost("etcd-2"), "etcd_data=yes", "service.etcd=active", "etcd_config="+b64(cfg))...)), nil)
		if m.Host != "" || m.Departing {
			t.Errorf("etcd-2: %+v, want it on no host: the machine advertises another peer URL", m)
		}
	})
	t.Run("its machine not reached", func(t *testing.T) {
		m := gather(t, nil, errors.New("connection refused"))
		if m.Host != "" || m.Departing || m.HostReachable {
			t.Errorf("etcd-2: %+v, want it on no host", m)
		}
		if hs := DepartingHosts(&plan.Facts{Etcd: []plan.EtcdMember{m}}); len(hs) != 0 {
			t.Errorf("an unreached machine is a departing host: %+v", hs)
		}
	})
}
