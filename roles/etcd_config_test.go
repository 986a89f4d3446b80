package roles

import (
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
)

// TestEtcdConfigAcceptedByEtcd loads every rendered etcd configuration with
// etcd 3.6's own parser (the code behind etcd --config-file) and runs its
// validation. etcd ignores unknown keys, so the test also checks that every
// setting arrived in the parsed configuration: a misspelt key would
// otherwise be dropped without a word. The last case is the first external
// one with every tuning setting of the etcd block changed.
func TestEtcdConfigAcceptedByEtcd(t *testing.T) {
	var tuned *renderCase
	for _, c := range renderCases() {
		inv := loadInventory(t, c.inventory)
		if inv.Topology.EtcdMode != inventory.EtcdExternal {
			continue
		}
		if tuned == nil {
			tuned = &c
		}
		t.Run(c.name, func(t *testing.T) { checkEtcdConfigs(t, c, inv) })
	}
	t.Run("tuned", func(t *testing.T) {
		inv := loadInventory(t, tuned.inventory)
		inv.Etcd.HeartbeatInterval = 250 * time.Millisecond
		inv.Etcd.ElectionTimeout = 2500 * time.Millisecond
		inv.Etcd.QuotaBackendBytes = 3 << 30
		inv.Etcd.SnapshotCount = 25000
		checkEtcdConfigs(t, *tuned, inv)
	})
}

// checkEtcdConfigs renders inv and loads every member's configuration with etcd's parser.
func checkEtcdConfigs(t *testing.T, c renderCase, inv *inventory.Inventory) {
	st := newState(t, inv)
	r := render(t, c, inv, st)
	dir := t.TempDir()
	for _, name := range inv.Topology.EtcdMembers {
		h := r.Host(name)
		path := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(path, fileAt(t, h, plan.EtcdConfigPath).Content, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := embed.ConfigFromFile(path)
		if err != nil {
			t.Fatalf("%s: etcd refuses the configuration: %v", name, err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%s: etcd's validation fails: %v", name, err)
		}
		e := h.Etcd
		var initial []string
		for _, m := range e.Bootstrap.Cluster {
			initial = append(initial, m+"="+r.Host(m).Etcd.PeerURL)
		}
		checks := []struct {
			what      string
			got, want any
		}{
			{"name", cfg.Name, name},
			{"data-dir", cfg.Dir, inv.Etcd.DataDir},
			{"listen-client-urls", urls(cfg.ListenClientUrls), sortedList(e.ClientURL, "https://127.0.0.1:2379")},
			{"advertise-client-urls", urls(cfg.AdvertiseClientUrls), e.ClientURL},
			{"listen-peer-urls", urls(cfg.ListenPeerUrls), e.PeerURL},
			{"initial-advertise-peer-urls", urls(cfg.AdvertisePeerUrls), e.PeerURL},
			{"initial-cluster", cfg.InitialCluster, strings.Join(initial, ",")},
			{"initial-cluster-state", cfg.ClusterState, e.Bootstrap.State},
			{"initial-cluster-token", cfg.InitialClusterToken, r.EtcdInitialClusterToken},
			{"client cert-file", cfg.ClientTLSInfo.CertFile, "/etc/kubernetes/pki/etcd/server.crt"},
			{"client key-file", cfg.ClientTLSInfo.KeyFile, "/etc/kubernetes/pki/etcd/server.key"},
			{"client trusted-ca-file", cfg.ClientTLSInfo.TrustedCAFile, "/etc/kubernetes/pki/etcd/ca.crt"},
			{"client client-cert-auth", cfg.ClientTLSInfo.ClientCertAuth, true},
			{"peer cert-file", cfg.PeerTLSInfo.CertFile, "/etc/kubernetes/pki/etcd/peer.crt"},
			{"peer key-file", cfg.PeerTLSInfo.KeyFile, "/etc/kubernetes/pki/etcd/peer.key"},
			{"peer trusted-ca-file", cfg.PeerTLSInfo.TrustedCAFile, "/etc/kubernetes/pki/etcd/ca.crt"},
			{"peer client-cert-auth", cfg.PeerTLSInfo.ClientCertAuth, true},
			{"heartbeat-interval", cfg.TickMs, uint(inv.Etcd.HeartbeatInterval.Milliseconds())},
			{"election-timeout", cfg.ElectionMs, uint(inv.Etcd.ElectionTimeout.Milliseconds())},
			{"snapshot-count", cfg.SnapshotCount, uint64(inv.Etcd.SnapshotCount)},
			{"quota-backend-bytes", cfg.QuotaBackendBytes, inv.Etcd.QuotaBackendBytes},
			{"auto-compaction-mode", cfg.AutoCompactionMode, "periodic"},
			{"auto-compaction-retention", cfg.AutoCompactionRetention, "1h"},
			{"strict-reconfig-check", cfg.StrictReconfigCheck, true},
		}
		for _, ch := range checks {
			if ch.got != ch.want {
				t.Errorf("%s: %s = %v, want %v", name, ch.what, ch.got, ch.want)
			}
		}
	}
}

func fileAt(t *testing.T, h *HostFiles, path string) File {
	t.Helper()
	for _, f := range h.Files {
		if f.Path == path {
			return f
		}
	}
	t.Fatalf("%s: no file %s", h.Name, path)
	return File{}
}

// urls lists parsed URLs sorted, as etcd keeps them.
func urls(us []url.URL) string {
	s := make([]string, len(us))
	for i, u := range us {
		s[i] = u.String()
	}
	return sortedList(s...)
}

func sortedList(s ...string) string {
	slices.Sort(s)
	return strings.Join(s, ",")
}
