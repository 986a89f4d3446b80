package roles

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
)

// TestSecrets checks, for every case, that each file holding a join secret or
// a private key is marked Secret with mode 0600, and that no secret reaches
// File.Redacted, %v, or JSON.
func TestSecrets(t *testing.T) {
	for _, c := range renderCases() {
		t.Run(c.name, func(t *testing.T) {
			inv := loadInventory(t, c.inventory)
			st := newState(t, inv)
			r := render(t, c, inv, st)
			secrets := []string{st.Secrets.BootstrapToken.Reveal(), st.Secrets.CertificateKey.Reveal()}
			var sawToken bool
			for _, h := range r.Hosts {
				for _, f := range h.Files {
					holds := bytes.Contains(f.Content, []byte("PRIVATE KEY"))
					for _, s := range secrets {
						if bytes.Contains(f.Content, []byte(s)) {
							holds, sawToken = true, true
						}
					}
					if holds && (!f.Secret || f.Mode.Perm() != 0o600) {
						t.Errorf("%s:%s holds a secret but is %v", h.Name, f.Path, f)
					}
					if !holds && f.Secret {
						t.Errorf("%s:%s holds no secret but is marked secret", h.Name, f.Path)
					}
					js, err := json.Marshal(f)
					if err != nil {
						t.Fatal(err)
					}
					for _, shown := range [][]byte{f.Redacted, []byte(fmt.Sprintf("%v %+v %s", f, f, f)), js} {
						if bytes.Contains(shown, []byte("PRIVATE KEY")) {
							t.Errorf("%s:%s: a private key is shown", h.Name, f.Path)
						}
						for _, s := range secrets {
							if bytes.Contains(shown, []byte(s)) {
								t.Errorf("%s:%s: a join secret is shown", h.Name, f.Path)
							}
						}
					}
				}
			}
			if !sawToken {
				t.Error("no file holds the bootstrap token: the kubeadm configurations are missing")
			}
		})
	}
}

// TestNodeSpec checks who inits, who joins, and that labels stay out of the kubeadm configuration.
func TestNodeSpec(t *testing.T) {
	inv := loadInventory(t, "../examples/openshift.kprov.hcl")
	r := render(t, renderCase{}, inv, newState(t, inv))
	want := map[string]KubeadmAction{
		"master-1": KubeadmInit, "master-2": KubeadmJoinControlPlane, "master-3": KubeadmJoinControlPlane,
		"infra-1": KubeadmJoin, "compute-1": KubeadmJoin,
	}
	for name, action := range want {
		h := r.Host(name)
		if h == nil || h.Node == nil || h.Node.Kubeadm != action {
			t.Errorf("%s: want kubeadm %s, got %+v", name, action, h)
		}
	}
	infra := r.Host("infra-1")
	if _, ok := infra.Node.Labels[inventory.InfraRoleLabel]; !ok {
		t.Errorf("infra-1: labels %v lack %s", infra.Node.Labels, inventory.InfraRoleLabel)
	}
	for _, f := range infra.Files {
		if f.Path == plan.KubeadmJoinPath && strings.Contains(string(f.Content), "node-role.kubernetes.io/infra=") {
			t.Error("infra-1: the join configuration sets the infra label, which NodeRestriction refuses")
		}
	}

	inv = loadInventory(t, "../examples/ha-stacked.kprov.hcl")
	r, err := Render(inv, newState(t, inv), Options{InitMaster: "master-2"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Host("master-2").Node.Kubeadm != KubeadmInit || r.Host("master-1").Node.Kubeadm != KubeadmJoinControlPlane {
		t.Error("InitMaster master-2: want master-2 to init and master-1 to join")
	}
	if _, err := Render(inv, newState(t, inv), Options{InitMaster: "compute-1"}); err == nil {
		t.Error("InitMaster compute-1: want an error, compute-1 is no master")
	}
}

// TestEtcdBootstrap checks the fresh and formed member configurations and refuses bad ones.
func TestEtcdBootstrap(t *testing.T) {
	members := []string{"a", "b", "c"}
	fresh := FreshEtcdBootstrap(members)
	if b := fresh["a"]; b.State != EtcdStateNew || len(b.Cluster) != 1 {
		t.Errorf("fresh a: %+v, want new with only itself", b)
	}
	if b := fresh["c"]; b.State != EtcdStateExisting || strings.Join(b.Cluster, ",") != "a,b,c" {
		t.Errorf("fresh c: %+v, want existing with a,b,c", b)
	}
	for _, b := range FormedEtcdBootstrap(members) {
		if b.State != EtcdStateExisting || len(b.Cluster) != 3 {
			t.Errorf("formed: %+v, want existing with all three", b)
		}
	}

	inv := loadInventory(t, "../examples/ha-external.kprov.hcl")
	st := newState(t, inv)
	for name, b := range map[string]EtcdBootstrap{
		"etcd-1":   {State: "bogus", Cluster: []string{"etcd-1"}},
		"etcd-2":   {State: EtcdStateExisting, Cluster: []string{"etcd-1"}},             // itself missing
		"etcd-3":   {State: EtcdStateExisting, Cluster: []string{"etcd-3", "master-1"}}, // not a member
		"master-1": {State: EtcdStateNew, Cluster: []string{"master-1"}},                // not a member
	} {
		if _, err := Render(inv, st, Options{EtcdBootstrap: map[string]EtcdBootstrap{name: b}}); err == nil {
			t.Errorf("%s %+v: want an error", name, b)
		}
	}
}
