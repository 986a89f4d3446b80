//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/lab"
	"github.com/kprov/kprov/provision"
	"github.com/kprov/kprov/provision/pki"
)

// certStageLine is a certificate roll's stage line in the output.
var certStageLine = regexp.MustCompile(`^\[etcd\] renewing the certificates of member (\S+)( \.\.\.|: done in .*|: FAILED .*)$`)

// servedSerials dials every etcd member's client (2379) and peer (2380)
// port over the lab bridge with kprov's healthcheck client and returns the
// serial of the certificate each serves, by "member:port", checking it
// chains to the etcd CA for the member's address.
func servedSerials(t *testing.T, ctx context.Context, l *lab.Lab, stateDir string) map[string]string {
	t.Helper()
	st, err := pki.Load(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(st.EtcdCA.Cert)
	out := map[string]string{}
	for _, m := range l.Machines() {
		if !slices.Contains(m.Roles, inventory.RoleEtcd) {
			continue
		}
		for _, port := range []string{"2379", "2380"} {
			d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{
				RootCAs: roots, ServerName: m.Address.String(), Certificates: []tls.Certificate{st.EtcdHealthcheckClient.TLSCertificate()}}}
			conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(m.Address.String(), port))
			if err != nil {
				t.Fatalf("%s:%s: %v", m.Name, port, err)
			}
			out[m.Name+":"+port] = conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
			conn.Close()
		}
	}
	return out
}

// certsReport runs kprov certs --json and decodes it; it must exit 0.
func certsReport(t *testing.T, inv string) *provision.CertsReport {
	t.Helper()
	out, err := exec.Command(kprovBin, "-f", inv, "certs", "--json").Output()
	if err != nil {
		t.Fatalf("kprov certs --json: %v\n%s", err, out)
	}
	rep := &provision.CertsReport{}
	if err := json.Unmarshal(out, rep); err != nil {
		t.Fatalf("kprov certs --json: %v\n%s", err, out)
	}
	return rep
}

// TestCertsRenew forms the 3-member external etcd lab, then:
//
//   - kprov certs lists every certificate as matching, and exits 0;
//     kprov certs renew --expiring-within 30d has nothing to renew;
//   - kprov certs renew --all --auto-approve under the etcd load renews
//     every member one at a time, the leader last, with no acknowledged
//     write lost and never more than one member not answering;
//   - every member then serves a new certificate (serial) on its client
//     and peer ports, the state directory's, and kprov certs shows the new
//     not-after with every host's copy matching; the old certificates are
//     in the state directory's history;
//   - kprov apply has nothing to do, nor has kprov certs renew
//     --expiring-within 30d.
func TestCertsRenew(t *testing.T) {
	runsBeside(t, false)
	l := UpLab(t, upgradeSpecs())
	inv := l.InventoryPath()
	stateDir := filepath.Join(filepath.Dir(inv), ".kprov", l.Name())
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()

	out, err := kprovErr(t, "-f", inv, "apply", "--auto-approve")
	assertApplied(t, out, err)
	checkEtcd(t, ctx, l, inv)

	// 1. The listing, and nothing expiring.
	text := kprov(t, "-f", inv, "certs")
	for _, m := range []string{"etcd-1", "etcd-2", "etcd-3"} {
		for _, f := range []string{"server.crt", "peer.crt", "healthcheck-client.crt"} {
			if !regexp.MustCompile(`(?m)^` + m + `\s+/etc/kubernetes/pki/etcd/` + regexp.QuoteMeta(f) + `\s+matches\s`).MatchString(text) {
				t.Errorf("kprov certs shows no matching %s on %s:\n%s", f, m, text)
			}
		}
	}
	if !regexp.MustCompile(`(?m)^master-1\s+/etc/kubernetes/pki/apiserver\.crt\s+kubeadm\s`).MatchString(text) {
		t.Errorf("kprov certs does not list kubeadm's apiserver.crt on master-1:\n%s", text)
	}
	before := certsReport(t, inv)
	oldServed := servedSerials(t, ctx, l, stateDir)
	kc := filepath.Join(stateDir, "admin.conf")
	oldAdmin, err := os.ReadFile(kc)
	if err != nil {
		t.Fatal(err)
	}
	out = kprov(t, "-f", inv, "certs", "renew", "--expiring-within", "30d")
	if !strings.Contains(out, "No changes") {
		t.Errorf("renew --expiring-within 30d on fresh certificates:\n%s", out)
	}

	// 2. Renew everything under load.
	cli := etcdClient(t, ctx, l, inv)
	defer cli.Close()
	load := startEtcdLoad(t, ctx, l, inv)
	leader := leaderName(t, ctx, cli)
	start := time.Now()
	out, err = kprovErr(t, "-f", inv, "certs", "renew", "--all", "--auto-approve")
	took := time.Since(start)
	if err != nil {
		t.Fatalf("kprov certs renew --all: %v\n%s", err, out)
	}
	figures := load.stop()
	t.Logf("writes during the renewal (%s): %s", took.Round(time.Second), figures)
	rolled := rollStages(t, out, certStageLine, false)
	t.Logf("leader %s; members renewed in order %v", leader, rolled)
	if len(rolled) != 3 || rolled[2] != leader {
		t.Errorf("renewed %v: want all three, the leader %s last\n%s", rolled, leader, out)
	}
	if figures.maxDown > 1 {
		t.Errorf("etcd's status showed %d members not answering at once during the renewal", figures.maxDown)
	}
	load.verify(t, ctx, cli)
	for _, f := range []string{"pki/etcd/members/etcd-1/server.crt", "pki/etcd/members/etcd-3/peer.crt", "pki/apiserver-etcd-client.crt", "pki/etcd/healthcheck-client.crt"} {
		if !strings.Contains(out, "renewed "+f+" (the old one is kept under pki-history/") {
			t.Errorf("renew does not report %s kept in the history:\n%s", f, out)
		}
	}
	hist, _ := filepath.Glob(filepath.Join(stateDir, pki.HistoryDir, "*", "pki", "etcd", "members", "etcd-2", "server.key"))
	if len(hist) != 1 {
		t.Errorf("the history holds %d old etcd-2 server keys, want 1", len(hist))
	} else if fi, err := os.Stat(hist[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the old key in the history: %v %v", fi, err)
	}

	// 3. Every member serves its new certificate, the state directory's.
	newServed := servedSerials(t, ctx, l, stateDir)
	st, err := pki.Load(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	for k, serial := range newServed {
		member, port, _ := strings.Cut(k, ":")
		want := st.EtcdMembers[member].Server.Cert.SerialNumber.Text(16)
		if port == "2380" {
			want = st.EtcdMembers[member].Peer.Cert.SerialNumber.Text(16)
		}
		if serial == oldServed[k] || serial != want {
			t.Errorf("%s serves serial %s (before %s, the state directory's %s)", k, serial, oldServed[k], want)
		}
	}
	after := certsReport(t, inv)
	notAfter := func(rep *provision.CertsReport, host, path string) time.Time {
		for _, h := range rep.Hosts {
			for _, c := range h.Certs {
				if h.Host == host && c.Path == path {
					if c.State != provision.CertMatches || c.Host == nil {
						t.Errorf("kprov certs: %s %s is %s", host, path, c.State)
						return time.Time{}
					}
					return c.Host.NotAfter
				}
			}
		}
		t.Errorf("kprov certs lists no %s on %s", path, host)
		return time.Time{}
	}
	for _, m := range []string{"etcd-1", "etcd-2", "etcd-3"} {
		for _, f := range []string{"server.crt", "peer.crt"} {
			path := "/etc/kubernetes/pki/etcd/" + f
			if b, a := notAfter(before, m, path), notAfter(after, m, path); !a.After(b) {
				t.Errorf("%s %s: not-after %s after the renewal, %s before", m, f, a, b)
			}
		}
	}
	if b, a := notAfter(before, "master-1", "/etc/kubernetes/pki/apiserver-etcd-client.crt"), notAfter(after, "master-1", "/etc/kubernetes/pki/apiserver-etcd-client.crt"); !a.After(b) {
		t.Errorf("master-1 apiserver-etcd-client: not-after %s after, %s before", a, b)
	}

	// kubeadm's certificates on master-1, its control plane restarted,
	// and the admin kubeconfig fetched again (a new client certificate
	// that the restarted API server accepts).
	if !strings.Contains(out, "[certs] renewing kubeadm's certificates on master-1: done") || !strings.Contains(out, "renewed kubeadm's certificates on master-1 (its control plane restarted)") {
		t.Errorf("renew --all does not report kubeadm's certificates renewed on master-1:\n%s", out)
	}
	kubeadmNotAfter := func(rep *provision.CertsReport, path string) time.Time {
		for _, h := range rep.Hosts {
			for _, c := range h.Certs {
				if h.Host == "master-1" && c.Path == path && c.State == provision.CertKubeadm && c.Host != nil {
					return c.Host.NotAfter
				}
			}
		}
		t.Errorf("kprov certs lists no kubeadm %s on master-1", path)
		return time.Time{}
	}
	for _, f := range []string{"/etc/kubernetes/pki/apiserver.crt", "/etc/kubernetes/pki/front-proxy-client.crt"} {
		if b, a := kubeadmNotAfter(before, f), kubeadmNotAfter(after, f); !a.After(b) {
			t.Errorf("master-1 %s: not-after %s after the renewal, %s before", f, a, b)
		}
	}
	if newAdmin, err := os.ReadFile(kc); err != nil || string(newAdmin) == string(oldAdmin) {
		t.Errorf("the state directory's admin.conf was not fetched again after the renewal: %v", err)
	}
	assertNodesReady(t, ctx, kc, []string{"master-1"})

	// 4. Nothing left to do, for apply and for the renewal.
	out, err = kprovErr(t, "-f", inv, "apply", "--auto-approve")
	if err != nil || !strings.Contains(out, "No changes") {
		t.Errorf("apply after the renewal: %v\n%s", err, out)
	}
	out = kprov(t, "-f", inv, "certs", "renew", "--expiring-within", "30d")
	if !strings.Contains(out, "No changes") {
		t.Errorf("a second renewal with nothing expiring:\n%s", out)
	}
	checkEtcd(t, ctx, l, inv)
}
