package provision

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/roles"
)

// selfSigned is a throwaway certificate standing in for one kubeadm issued.
func selfSigned(t *testing.T, cn string, notAfter time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: cn},
		NotBefore: notAfter.Add(-365 * 24 * time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// listing answers scriptReadCerts as a host holding files (path -> bytes)
// and keys (path -> sha256) would, with unreadable ones named.
func listing(want []pki.File, files map[string][]byte, keys map[string]string, unreadable []string, kubeadm map[string][]byte) string {
	var lines []string
	for _, f := range want {
		switch {
		case slices.Contains(unreadable, f.Path):
			kind := "crt"
			if f.Secret {
				kind = "key"
			}
			lines = append(lines, kind+" "+f.Path+" unreadable")
		case strings.HasSuffix(f.Path, ".crt"):
			if b, ok := files[f.Path]; ok {
				lines = append(lines, "crt "+f.Path+" ok "+base64.StdEncoding.EncodeToString(b))
			} else {
				lines = append(lines, "crt "+f.Path+" absent")
			}
		case strings.HasSuffix(f.Path, ".key"):
			if s, ok := keys[f.Path]; ok {
				lines = append(lines, "key "+f.Path+" ok "+s)
			} else {
				lines = append(lines, "key "+f.Path+" absent")
			}
		}
	}
	for _, p := range slices.Sorted(func(yield func(string) bool) {
		for p := range kubeadm {
			if !yield(p) {
				return
			}
		}
	}) {
		lines = append(lines, "kubeadm "+p+" ok "+base64.StdEncoding.EncodeToString(kubeadm[p]))
	}
	return strings.Join(append(lines, "end=ok"), "\n") + "\n"
}

// asHost is what a host holds after an apply: every file as kprov's.
func asHost(want []pki.File) (map[string][]byte, map[string]string) {
	files, keys := map[string][]byte{}, map[string]string{}
	for _, f := range want {
		if f.Secret {
			keys[f.Path] = f.SHA256()
		} else {
			files[f.Path] = f.Content
		}
	}
	return files, keys
}

// TestCertsReport reads each host's certificates through a strict fake:
// etcd-1 and the master hold kprov's; etcd-2 holds an older server
// certificate and key; etcd-3's peer certificate cannot be read and its
// healthcheck client is missing; the master also lists kubeadm's own
// certificates, one expired; node-1 is unreachable and reported without
// failing the listing.
func TestCertsReport(t *testing.T) {
	now := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	inv := testInventory()
	st, _, err := pki.Ensure(filepath.Join(t.TempDir(), "state"), roles.PKIRequest(inv), now.Add(-100*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// etcd-2's host holds the certificate a later renewal replaced in the state directory.
	older := st
	st, _, err = st.ReissueEtcdLeaves(roles.PKIRequest(inv), []string{"pki/etcd/members/etcd-2/server"}, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}

	conn := &fakeConnector{t: t, hosts: map[string]*fakeHost{}, errs: map[string]error{"node-1": errors.New("connect 10.0.0.31:22: connection refused")}}
	expect := func(name string, dirs []string, stdout string) {
		h := inv.Host(name)
		want, err := st.FilesFor(name, h.Roles...)
		if err != nil {
			t.Fatal(err)
		}
		script, err := scriptReadCerts(want, dirs)
		if err != nil {
			t.Fatal(err)
		}
		conn.hosts[name] = newFakeHost(t, name, fakeRun{cmd: "sh -s", stdin: script, stdout: stdout})
	}
	filesOf := func(s *pki.State, name string) []pki.File {
		f, err := s.FilesFor(name, inv.Host(name).Roles...)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	f1, k1 := asHost(filesOf(st, "etcd-1"))
	expect("etcd-1", nil, listing(filesOf(st, "etcd-1"), f1, k1, nil, nil))
	f2, k2 := asHost(filesOf(older, "etcd-2"))
	expect("etcd-2", nil, listing(filesOf(st, "etcd-2"), f2, k2, nil, nil))
	f3, k3 := asHost(filesOf(st, "etcd-3"))
	delete(f3, pki.RemotePKIDir+"/etcd/healthcheck-client.crt")
	expect("etcd-3", nil, listing(filesOf(st, "etcd-3"), f3, k3, []string{pki.RemotePKIDir + "/etcd/peer.crt"}, nil))
	fc, kc := asHost(filesOf(st, "cp-1"))
	kubeadm := map[string][]byte{
		pki.RemotePKIDir + "/apiserver.crt":          selfSigned(t, "kube-apiserver", now.Add(300*24*time.Hour)),
		pki.RemotePKIDir + "/front-proxy-client.crt": selfSigned(t, "front-proxy-client", now.Add(-24*time.Hour)),
		pki.RemotePKIDir + "/ca.crt":                 st.CA.CertPEM, // kprov's: listed as kprov's, not kubeadm's
	}
	expect("cp-1", kubeadmPKIDirs, listing(filesOf(st, "cp-1"), fc, kc, nil, kubeadm))

	p := &Pipeline{Cluster: &Cluster{Inventory: inv, State: st}, Conn: conn, Parallel: 2, Now: func() time.Time { return now }}
	rep, err := p.Certs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Failed {
		t.Error("Failed is false")
	}
	states := map[string]string{}
	for _, h := range rep.Hosts {
		for _, c := range h.Certs {
			states[h.Host+":"+strings.TrimPrefix(c.Path, pki.RemotePKIDir+"/")] = c.State
		}
	}
	for k, want := range map[string]string{
		"etcd-1:etcd/server.crt": CertMatches, "etcd-1:etcd/peer.crt": CertMatches, "etcd-1:etcd/ca.crt": CertMatches, "etcd-1:etcd/healthcheck-client.crt": CertMatches,
		"etcd-2:etcd/server.crt": CertDiffers, "etcd-2:etcd/peer.crt": CertMatches,
		"etcd-3:etcd/peer.crt": CertUnreadable, "etcd-3:etcd/healthcheck-client.crt": CertMissing, "etcd-3:etcd/server.crt": CertMatches,
		"cp-1:apiserver-etcd-client.crt": CertMatches, "cp-1:ca.crt": CertMatches,
		"cp-1:apiserver.crt": CertKubeadm, "cp-1:front-proxy-client.crt": CertExpired,
	} {
		if states[k] != want {
			t.Errorf("%s: %q, want %q", k, states[k], want)
		}
	}
	if n := len(states); n != 4+4+4+6 { // cp-1: 4 of kprov's, 2 of kubeadm's
		t.Errorf("%d rows: %v", n, states)
	}
	wantProblems := []string{
		"cp-1: /etc/kubernetes/pki/front-proxy-client.crt: kubeadm's certificate expired on 2026-12-01",
		"etcd-2: /etc/kubernetes/pki/etcd/server.crt: the host holds another certificate than the state directory's: run kprov apply",
		"etcd-3: /etc/kubernetes/pki/etcd/healthcheck-client.crt: kprov's certificate is not on the host: run kprov apply",
		"etcd-3: /etc/kubernetes/pki/etcd/peer.crt: cannot be read",
		"node-1 is unreachable (connect 10.0.0.31:22: connection refused)",
	}
	for _, w := range wantProblems {
		if !slices.ContainsFunc(rep.Problems, func(p string) bool { return strings.HasPrefix(p, w) }) {
			t.Errorf("no problem %q in\n%s", w, strings.Join(rep.Problems, "\n"))
		}
	}
	if len(rep.Problems) != len(wantProblems) {
		t.Errorf("%d problems, want %d:\n%s", len(rep.Problems), len(wantProblems), strings.Join(rep.Problems, "\n"))
	}
	// The state directory's certificates: three CAs and every etcd leaf.
	if len(rep.State) != 3+8 {
		t.Errorf("state: %d certificates", len(rep.State))
	}
	for _, s := range rep.State {
		if s.Path == "pki/etcd/members/etcd-2/server.crt" && (s.DaysLeft != 364 || s.Serial != st.EtcdMembers["etcd-2"].Server.Cert.SerialNumber.Text(16)) {
			t.Errorf("etcd-2 server: %+v", s)
		}
	}

	// Every host as kprov left it, and the unreachable one back: nothing fails.
	conn = &fakeConnector{t: t, hosts: map[string]*fakeHost{}}
	for _, name := range []string{"etcd-1", "etcd-2", "etcd-3", "cp-1", "node-1"} {
		f, k := asHost(filesOf(st, name))
		var dirs []string
		if name == "cp-1" {
			dirs = kubeadmPKIDirs
		}
		expect(name, dirs, listing(filesOf(st, name), f, k, nil, nil))
	}
	p.Conn = conn
	if rep, err := p.Certs(t.Context()); err != nil || rep.Failed || len(rep.Problems) != 0 {
		t.Errorf("a converged cluster: %v %v %q", err, rep.Failed, rep.Problems)
	}
}

func TestParseCertListingRefusesTruncated(t *testing.T) {
	if _, err := parseCertListing([]byte("crt /etc/kubernetes/pki/ca.crt absent\n")); err == nil || !strings.Contains(err.Error(), "ended early") {
		t.Errorf("no end marker: %v", err)
	}
	if _, err := parseCertListing([]byte("crt /x ok\nend=ok\n")); err == nil {
		t.Error("a line without content was accepted")
	}
}
