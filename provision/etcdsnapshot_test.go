package provision

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/backup"
	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
)

// TestEtcdSnapshotLive takes kprov backup's snapshot from a real etcd 3.6
// cluster of three voters over TLS, every connection through the fake SSH
// tunnel of the host it targets: the snapshot comes from a follower, holds
// every key written, and checks out with etcd's code. With two members
// stopped (no quorum) it fails, naming each member and why.
func TestEtcdSnapshotLive(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real etcd cluster")
	}
	state := filepath.Join(t.TempDir(), "state")
	var req pki.Request
	inv := &inventory.Inventory{Etcd: inventory.Etcd{DataDir: "/var/lib/etcd"},
		Topology: inventory.Topology{EtcdMode: inventory.EtcdExternal}}
	addrs := etcdTestAddrs[:3]
	var initial []string
	for i, addr := range addrs {
		name := fmt.Sprintf("etcd-%d", i+1)
		req.EtcdMembers = append(req.EtcdMembers, pki.Member{Name: name, Address: addr})
		inv.Hosts = append(inv.Hosts, &inventory.Host{Name: name, Address: addr, Roles: []inventory.Role{inventory.RoleEtcd}})
		inv.Topology.EtcdHosts = append(inv.Topology.EtcdHosts, name)
		initial = append(initial, name+"="+plan.EtcdPeerURL(addr))
	}
	inv.Topology.EtcdMembers = inv.Topology.EtcdHosts
	st, _, err := pki.Ensure(state, req, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var members []testMember
	for i, addr := range addrs {
		members = append(members, startMember(t, state, fmt.Sprintf("etcd-%d", i+1), addr, strings.Join(initial, ","), embed.ClusterStateFlagNew))
	}
	waitReady(t, members...)

	tlsCfg, err := EtcdClientTLS(st)
	if err != nil {
		t.Fatal(err)
	}
	direct, err := clientv3.New(clientv3.Config{Endpoints: []string{plan.EtcdClientURL(addrs[0])}, TLS: tlsCfg.Clone(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	ctx := t.Context()
	const keys = 500
	for i := range keys {
		if _, err := direct.Put(ctx, fmt.Sprintf("/registry/test/%04d", i), "value"); err != nil {
			t.Fatal(err)
		}
	}
	last, err := direct.Get(ctx, "/registry/test/0000")
	if err != nil {
		t.Fatal(err)
	}

	// Each host tunnels only to its own member's client port; no command runs.
	var mu sync.Mutex
	dialled := map[string]int{}
	hosts := map[string]*fakeHost{}
	for i, addr := range addrs {
		name := fmt.Sprintf("etcd-%d", i+1)
		f := newFakeHost(t, name)
		f.dial = func(ctx context.Context, network, target string) (net.Conn, error) {
			if target != net.JoinHostPort(addr, "2379") {
				t.Errorf("%s: tunnel to %s, want only its own client port", name, target)
			}
			mu.Lock()
			dialled[name]++
			mu.Unlock()
			var d net.Dialer
			return d.DialContext(ctx, network, target)
		}
		hosts[name] = f
	}
	conn := &fakeConnector{t: t, hosts: hosts}
	p := &Pipeline{Cluster: &Cluster{Inventory: inv, State: st}, Conn: conn}

	path := filepath.Join(t.TempDir(), "snapshot.db")
	snap, err := p.EtcdSnapshot(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	leader, err := direct.Status(ctx, plan.EtcdClientURL(addrs[0]))
	if err != nil {
		t.Fatal(err)
	}
	var leaderName string
	for _, m := range members {
		if uint64(m.Server.MemberID()) == leader.Leader {
			leaderName = m.Config().Name
		}
	}
	if snap.Member == leaderName || snap.Member == "" {
		t.Errorf("snapshot from %q; the leader is %q: want a follower", snap.Member, leaderName)
	}
	if snap.Status.TotalKeys != keys || snap.Status.Revision != last.Header.Revision || len(snap.Members) != 3 {
		t.Errorf("snapshot %+v, want %d keys at revision %d from 3 members", snap, keys, last.Header.Revision)
	}
	if again, err := backup.CheckSnapshot(path); err != nil || again != snap.Status {
		t.Errorf("the file checks as %+v (%v), the snapshot said %+v", again, err, snap.Status)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("snapshot file: %v, %v", fi, err)
	}

	// Two of three stopped, etcd-3's host down too: no quorum, no healthy
	// member, each one named with why (etcd-3 with its SSH error).
	members[1].Stop()
	members[2].Stop()
	conn.errs = map[string]error{"etcd-3": errors.New("connect 127.83.0.3:22: connection refused")}
	path2 := filepath.Join(t.TempDir(), "snapshot.db")
	_, err = p.EtcdSnapshot(ctx, path2)
	if err == nil {
		t.Fatal("a snapshot without quorum")
	}
	msg := err.Error()
	if !strings.Contains(msg, "no healthy etcd voting member") {
		t.Errorf("error %q", msg)
	}
	for i, addr := range addrs {
		if !strings.Contains(msg, fmt.Sprintf("etcd-%d (%s)", i+1, plan.EtcdClientURL(addr))) {
			t.Errorf("error does not name etcd-%d: %s", i+1, msg)
		}
	}
	if !strings.Contains(msg, "etcd-1 ("+plan.EtcdClientURL(addrs[0])+"): has no leader") {
		t.Errorf("the running member's reason: %s", msg)
	}
	if !strings.Contains(msg, "etcd-3 ("+plan.EtcdClientURL(addrs[2])+"): etcd-3: connect 127.83.0.3:22: connection refused") {
		t.Errorf("the down host's reason: %s", msg)
	}
	if _, err := os.Stat(path2); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed snapshot left %s: %v", path2, err)
	}
	t.Logf("error: %v", err)
}
