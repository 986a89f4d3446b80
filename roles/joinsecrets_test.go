package roles

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
)

// TestPlanRenewsJoinSecrets: master-3 and compute-2 are added to a running
// cluster some time after its init (the test PKI's secrets were made at
// issued). With the clock moved past the certificate key's 2 h and the
// bootstrap token's 24 h (less the hour's margin), the plan gives the
// cluster what the joins need, on the master that runs the control plane,
// in a stage before the first join; with a fresh clock it renews nothing,
// and it never renews while kubeadm init is still to come.
func TestPlanRenewsJoinSecrets(t *testing.T) {
	inv := loadInventory(t, filepath.Join("..", "examples", "ha-stacked.kprov.hcl"))
	base := newState(t, inv)
	final, err := Render(inv, base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name           string
		after          time.Duration // the plan's clock, after the secrets were made
		zeroClock      bool
		join           []string // hosts that have not joined yet
		fresh          bool     // no control plane yet: kubeadm init is in the plan
		pending        bool     // both secrets renewed in the state directory already
		token, certKey bool
	}{
		{name: "fresh secrets", after: 30 * time.Minute, join: []string{"master-3", "compute-2"}},
		{name: "certificates about to be deleted", after: 90 * time.Minute, join: []string{"master-3", "compute-2"}, certKey: true},
		{name: "certificates deleted", after: 3 * time.Hour, join: []string{"master-3", "compute-2"}, certKey: true},
		{name: "certificates deleted, only a node joins", after: 3 * time.Hour, join: []string{"compute-2"}},
		{name: "token about to expire", after: 23*time.Hour + 30*time.Minute, join: []string{"compute-2"}, token: true},
		{name: "both expired", after: 3 * 24 * time.Hour, join: []string{"master-3", "compute-2"}, token: true, certKey: true},
		{name: "both expired, only a master joins", after: 3 * 24 * time.Hour, join: []string{"master-3"}, token: true, certKey: true},
		{name: "both expired, nothing joins", after: 3 * 24 * time.Hour},
		{name: "both expired, init in the plan", after: 3 * 24 * time.Hour, fresh: true},
		{name: "pending, fresh clock", after: time.Minute, pending: true, join: []string{"master-3", "compute-2"}, token: true, certKey: true},
		{name: "pending, no clock", zeroClock: true, pending: true, join: []string{"master-3"}, token: true, certKey: true},
		{name: "expired, no clock", zeroClock: true, join: []string{"master-3", "compute-2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := *base
			if c.pending {
				// What pki.RenewBootstrapToken and RenewCertificateKey leave.
				st.Secrets = pki.Secrets{
					BootstrapToken: "renewd.0123456789abcdef", BootstrapTokenCreated: issued, BootstrapTokenPending: true,
					CertificateKey: pki.Secret(bytes.Repeat([]byte("c"), 64)), CertificateKeyCreated: issued, CertificateKeyPending: true,
				}
			}
			facts := convergedFacts(t, inv, nil, final)
			if c.fresh {
				facts = plan.FreshFacts(hostNames(inv))
			}
			for _, h := range c.join {
				facts.Hosts[h] = &plan.HostFacts{Reachable: true}
			}
			now := issued.Add(c.after)
			if c.zeroClock {
				now = time.Time{}
			}
			if got := JoinSecretsToRenew(inv, facts, st.Secrets, now); got != (JoinSecretRenewal{BootstrapToken: c.token, CertificateKey: c.certKey}) {
				t.Errorf("JoinSecretsToRenew = %+v, want token %v, certificate key %v", got, c.token, c.certKey)
			}
			pl, err := Plan(inv, facts, &st, PlanOptions{Parallel: 4, Now: now})
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			var renew *plan.Stage
			for i, s := range pl.Stages {
				names = append(names, s.Name())
				if s.Kind == plan.StageJoinSecrets {
					renew = &pl.Stages[i]
				}
			}
			if !c.token && !c.certKey {
				if renew != nil {
					t.Fatalf("renews join secrets it does not need: %v", renew.Steps)
				}
				return
			}
			if renew == nil {
				t.Fatalf("no %s stage in %v", plan.StageJoinSecrets, names)
			}
			at := slices.Index(names, renew.Name())
			for i, s := range pl.Stages {
				if (s.Kind == plan.StageControlPlaneJoin || s.Kind == plan.StageNodesJoin) && i < at {
					t.Errorf("%s runs before the renewal: %v", s.Name(), names)
				}
			}
			if renew.Name() != "control-plane/join-secrets/master-1" || renew.Parallel != 1 {
				t.Errorf("stage %s, parallel %d; want control-plane/join-secrets/master-1, serial", renew.Name(), renew.Parallel)
			}
			want := []plan.Op{plan.OpWaitAPIServer}
			if c.token {
				want = append(want, plan.OpCreateBootstrapToken)
			}
			if c.certKey {
				want = append(want, plan.OpUploadCerts)
			}
			var got []plan.Op
			for _, s := range renew.Steps {
				got = append(got, s.Op)
				if s.Host != "master-1" || s.Reason == "" {
					t.Errorf("%s on %s with reason %q; want it on master-1 with a reason", s, s.Host, s.Reason)
				}
				switch s.Op {
				case plan.OpCreateBootstrapToken:
					if string(s.Content) != st.Secrets.BootstrapToken.Reveal() || !s.Secret {
						t.Error("create-bootstrap-token does not carry the state directory's token as a secret")
					}
				case plan.OpUploadCerts:
					if string(s.Content) != st.Secrets.CertificateKey.Reveal() || !s.Secret || s.Path != plan.KubeadmInitPath {
						t.Errorf("upload-certs does not carry the state directory's key, or names %s, not the init configuration", s.Path)
					}
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("steps %v, want %v", got, want)
			}

			// The join configurations carry the values the renewal gives the
			// cluster, and no printed or saved form of the plan carries them.
			for _, s := range pl.Stages[0].Steps {
				if s.Op != plan.OpUploadFile || (s.Path != plan.KubeadmJoinPath && s.Path != plan.KubeadmInitPath) {
					continue
				}
				if !bytes.Contains(s.Content, []byte(st.Secrets.BootstrapToken.Reveal())) {
					t.Errorf("%s:%s does not carry the bootstrap token", s.Host, s.Path)
				}
				if s.Host == "master-3" && !bytes.Contains(s.Content, []byte(st.Secrets.CertificateKey.Reveal())) {
					t.Errorf("%s:%s does not carry the certificate key", s.Host, s.Path)
				}
			}
			js, err := json.Marshal(pl)
			if err != nil {
				t.Fatal(err)
			}
			var text bytes.Buffer
			if err := pl.WriteText(&text, pl.HostChanges(inv, facts), plan.TextOptions{Detail: true}); err != nil {
				t.Fatal(err)
			}
			for _, secret := range []pki.Secret{st.Secrets.BootstrapToken, st.Secrets.CertificateKey} {
				if bytes.Contains(js, []byte(secret.Reveal())) || bytes.Contains(text.Bytes(), []byte(secret.Reveal())) {
					t.Error("a join secret reached the printed or saved plan")
				}
			}
		})
	}
}
