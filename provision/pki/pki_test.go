package pki

import (
	"bytes"
	"crypto/x509"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kprov/kprov/inventory"
)

// testNow is the fixed issuing time of the shared fixture.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// externalRequest is a three-member external etcd cluster.
var externalRequest = Request{EtcdMembers: []Member{
	{Name: "etcd-1", Address: "10.0.0.11"},
	{Name: "etcd-2", Address: "10.0.0.12"},
	{Name: "etcd-3", Address: "etcd-3.example.internal"},
}}

// RSA key generation is slow under -race, so one state directory is built
// once and each test works on its own copy.
var fixture = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "kprov-pki-fixture-*")
	if err != nil {
		return "", err
	}
	state := filepath.Join(dir, "state")
	_, _, err = Ensure(state, externalRequest, testNow)
	return state, err
})

func TestMain(m *testing.M) {
	code := m.Run()
	if dir, err := fixture(); err == nil {
		os.RemoveAll(filepath.Dir(dir))
	}
	os.Exit(code)
}

// stateCopy returns a private copy of the fixture, preserving modes (os.CopyFS would not).
func stateCopy(t *testing.T) string {
	t.Helper()
	src, err := fixture()
	if err != nil {
		t.Fatalf("fixture: %v", err)
	}
	dst := filepath.Join(t.TempDir(), "state")
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.Mkdir(target, fi.Mode().Perm())
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.WriteFile(target, data, fi.Mode().Perm()); err != nil {
			return err
		}
		return os.Chmod(target, fi.Mode().Perm()) // WriteFile's mode is subject to the umask
	})
	if err != nil {
		t.Fatalf("copy fixture: %v", err)
	}
	return dst
}

// snapshot returns every file's bytes under dir by relative path.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel], err = os.ReadFile(p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// changedFiles lists the files whose bytes differ between two snapshots.
func changedFiles(before, after map[string][]byte) []string {
	var out []string
	for p, b := range after {
		if !bytes.Equal(before[p], b) {
			out = append(out, p)
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			out = append(out, p+" (removed)")
		}
	}
	slices.Sort(out)
	return out
}

func changePaths(changes []Change) []string {
	var out []string
	for _, c := range changes {
		out = append(out, c.Path)
	}
	slices.Sort(out)
	return out
}

func mustLoad(t *testing.T, dir string) *State {
	t.Helper()
	s, err := Load(dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return s
}

func verify(t *testing.T, name string, leaf, ca *x509.Certificate, usage x509.ExtKeyUsage, dnsName string) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:       roots,
		KeyUsages:   []x509.ExtKeyUsage{usage},
		DNSName:     dnsName,
		CurrentTime: testNow,
	})
	if err != nil {
		t.Errorf("%s: verify for usage %v: %v", name, usage, err)
	}
}

func TestEnsureCAs(t *testing.T) {
	s := mustLoad(t, stateCopy(t))
	for _, tc := range []struct {
		pair *Pair
		cn   string
	}{{s.CA, "kubernetes"}, {s.FrontProxyCA, "front-proxy-ca"}, {s.EtcdCA, "etcd-ca"}} {
		c := tc.pair.Cert
		if c.Subject.CommonName != tc.cn || !c.IsCA || !c.BasicConstraintsValid {
			t.Errorf("%s: CN=%q IsCA=%v", tc.cn, c.Subject.CommonName, c.IsCA)
		}
		if c.KeyUsage&x509.KeyUsageCertSign == 0 {
			t.Errorf("%s: no cert-sign key usage", tc.cn)
		}
		if c.PublicKeyAlgorithm != x509.RSA {
			t.Errorf("%s: key %v, want RSA like kubeadm's default", tc.cn, c.PublicKeyAlgorithm)
		}
		if got := c.NotAfter.Sub(testNow); got != CAValidity {
			t.Errorf("%s: valid for %v, want %v", tc.cn, got, CAValidity)
		}
		if err := c.CheckSignatureFrom(c); err != nil {
			t.Errorf("%s: not self-signed: %v", tc.cn, err)
		}
	}
	if s.CA.Cert.Equal(s.EtcdCA.Cert) || s.CA.Cert.Equal(s.FrontProxyCA.Cert) {
		t.Error("the CAs must be distinct")
	}
}

func TestEnsureEtcdLeaves(t *testing.T) {
	s := mustLoad(t, stateCopy(t))
	ca := s.EtcdCA.Cert
	for _, m := range externalRequest.EtcdMembers {
		certs := s.EtcdMembers[m.Name]
		if certs == nil {
			t.Fatalf("no certificates for %s", m.Name)
		}
		wantDNS := []string{m.Name, "localhost"}
		wantIPs := []string{"127.0.0.1", "::1"}
		if ip := net.ParseIP(m.Address); ip != nil {
			wantIPs = append(wantIPs, ip.String())
		} else {
			wantDNS = append(wantDNS, m.Address)
		}
		slices.Sort(wantDNS)
		slices.Sort(wantIPs)
		for kind, p := range map[string]*Pair{"server": certs.Server, "peer": certs.Peer} {
			c := p.Cert
			name := m.Name + "/" + kind
			if c.Subject.CommonName != m.Name {
				t.Errorf("%s: CN %q", name, c.Subject.CommonName)
			}
			gotDNS := slices.Sorted(slices.Values(c.DNSNames))
			var gotIPs []string
			for _, ip := range c.IPAddresses {
				gotIPs = append(gotIPs, ip.String())
			}
			slices.Sort(gotIPs)
			if !slices.Equal(gotDNS, wantDNS) || !slices.Equal(gotIPs, wantIPs) {
				t.Errorf("%s: SANs DNS=%v IP=%v, want DNS=%v IP=%v", name, gotDNS, gotIPs, wantDNS, wantIPs)
			}
			if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
				t.Errorf("%s: ext key usage %v", name, c.ExtKeyUsage)
			}
			if c.IsCA || c.KeyUsage&x509.KeyUsageCertSign != 0 {
				t.Errorf("%s: a leaf must not be a CA", name)
			}
			if c.PublicKeyAlgorithm != x509.ECDSA {
				t.Errorf("%s: key %v, want ECDSA P-256", name, c.PublicKeyAlgorithm)
			}
			if got := c.NotAfter.Sub(testNow); got != LeafValidity {
				t.Errorf("%s: valid for %v, want %v", name, got, LeafValidity)
			}
			verify(t, name, c, ca, x509.ExtKeyUsageServerAuth, m.Name)
			verify(t, name, c, ca, x509.ExtKeyUsageServerAuth, m.Address)
			verify(t, name, c, ca, x509.ExtKeyUsageServerAuth, "127.0.0.1")
			verify(t, name, c, ca, x509.ExtKeyUsageClientAuth, "")
		}
	}
	for _, tc := range []struct {
		pair *Pair
		cn   string
	}{{s.EtcdHealthcheckClient, EtcdHealthcheckClientCN}, {s.APIServerEtcdClient, APIServerEtcdClientCommonName}} {
		c := tc.pair.Cert
		if c.Subject.CommonName != tc.cn || !slices.Equal(c.Subject.Organization, []string{"system:masters"}) {
			t.Errorf("%s: subject %v", tc.cn, c.Subject)
		}
		if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
			t.Errorf("%s: ext key usage %v", tc.cn, c.ExtKeyUsage)
		}
		verify(t, tc.cn, c, ca, x509.ExtKeyUsageClientAuth, "")
		roots := x509.NewCertPool()
		roots.AddCert(ca)
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, CurrentTime: testNow}); err == nil {
			t.Errorf("%s: a client certificate must not verify for server auth", tc.cn)
		}
	}
	// A leaf from the etcd CA must not verify against the Kubernetes CA.
	roots := x509.NewCertPool()
	roots.AddCert(s.CA.Cert)
	if _, err := s.APIServerEtcdClient.Cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: testNow}); err == nil {
		t.Error("apiserver-etcd-client verified against the Kubernetes CA")
	}
}

func TestStateFileModes(t *testing.T) {
	// Check the fixture as Ensure wrote it, not a copy.
	src, err := fixture()
	if err != nil {
		t.Fatal(err)
	}
	var keys int
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		perm := fi.Mode().Perm()
		switch {
		case d.IsDir():
			if perm != 0o700 {
				t.Errorf("%s: directory mode %04o, want 0700", p, perm)
			}
		case strings.HasSuffix(p, ".key") || strings.HasSuffix(p, ".json"):
			keys++
			if perm != 0o600 {
				t.Errorf("%s: mode %04o, want 0600", p, perm)
			}
		case strings.HasPrefix(d.Name(), "."):
			t.Errorf("%s: temporary file left behind", p)
		default:
			if perm != 0o644 {
				t.Errorf("%s: mode %04o, want 0644", p, perm)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// 3 CAs, sa, 2 clients, 2 per member, secrets.json.
	if want := 3 + 1 + 2 + 2*len(externalRequest.EtcdMembers) + 1; keys != want {
		t.Errorf("found %d secret files, want %d", keys, want)
	}
}

func TestEnsureTwiceReusesEverything(t *testing.T) {
	dir := stateCopy(t)
	before := snapshot(t, dir)
	_, changes, err := Ensure(dir, externalRequest, testNow.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 0 {
		t.Errorf("second run changed %v", changes)
	}
	if diff := changedFiles(before, snapshot(t, dir)); len(diff) != 0 {
		t.Errorf("second run rewrote %v", diff)
	}
}

func TestChangedAddressReissuesOnlyThatMember(t *testing.T) {
	dir := stateCopy(t)
	before := snapshot(t, dir)
	req := Request{EtcdMembers: slices.Clone(externalRequest.EtcdMembers)}
	req.EtcdMembers[1].Address = "10.0.0.22"
	s, changes, err := Ensure(dir, req, testNow)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"pki/etcd/members/etcd-2/peer.crt", "pki/etcd/members/etcd-2/server.crt"}
	if got := changePaths(changes); !slices.Equal(got, want) {
		t.Errorf("changes %v, want %v", got, want)
	}
	for _, c := range changes {
		if !strings.Contains(c.Reason, "10.0.0.22") {
			t.Errorf("reason %q does not name the new address", c.Reason)
		}
	}
	var wantFiles []string
	for _, f := range []string{
		"pki/etcd/members/etcd-2/peer.crt", "pki/etcd/members/etcd-2/peer.key",
		"pki/etcd/members/etcd-2/server.crt", "pki/etcd/members/etcd-2/server.key",
	} {
		// The replaced pair is kept in the history, under the issuing time.
		wantFiles = append(wantFiles, HistoryDir+"/20260301T120000.000Z/"+f, f)
	}
	slices.Sort(wantFiles)
	after := snapshot(t, dir)
	if got := changedFiles(before, after); !slices.Equal(got, wantFiles) {
		t.Errorf("rewrote %v, want %v", got, wantFiles)
	}
	if !bytes.Equal(after[HistoryDir+"/20260301T120000.000Z/pki/etcd/members/etcd-2/server.key"], before["pki/etcd/members/etcd-2/server.key"]) {
		t.Error("the history does not hold the replaced key")
	}
	verify(t, "etcd-2 server", s.EtcdMembers["etcd-2"].Server.Cert, s.EtcdCA.Cert, x509.ExtKeyUsageServerAuth, "10.0.0.22")
}

func TestRemovedMemberIsLeftOnDiskButNotInState(t *testing.T) {
	dir := stateCopy(t)
	req := Request{EtcdMembers: externalRequest.EtcdMembers[:2]}
	s, changes, err := Ensure(dir, req, testNow)
	if err != nil || len(changes) != 0 {
		t.Fatalf("Ensure: %v, changes %v", err, changes)
	}
	if s.EtcdMembers["etcd-3"] != nil {
		t.Error("etcd-3 is no longer requested but is in the state")
	}
	if _, err := s.FilesFor("etcd-3", inventory.RoleEtcd); err == nil {
		t.Error("FilesFor a removed member succeeded")
	}
}

func TestExpiringLeavesAreReissuedCAsAreNot(t *testing.T) {
	dir := stateCopy(t)
	later := testNow.Add(LeafValidity - RenewBefore + time.Hour)
	_, changes, err := Ensure(dir, externalRequest, later)
	if err != nil {
		t.Fatal(err)
	}
	got := changePaths(changes)
	want := []string{"pki/apiserver-etcd-client.crt", "pki/etcd/healthcheck-client.crt"}
	for _, m := range externalRequest.EtcdMembers {
		want = append(want, "pki/etcd/members/"+m.Name+"/peer.crt", "pki/etcd/members/"+m.Name+"/server.crt")
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("reissued %v, want %v", got, want)
	}
	// Just before the window nothing is due.
	dir = stateCopy(t)
	if _, changes, _ := Ensure(dir, externalRequest, testNow.Add(LeafValidity-RenewBefore-time.Hour)); len(changes) != 0 {
		t.Errorf("reissued before the renewal window: %v", changes)
	}
}

func TestCAWithoutKeyIsAnError(t *testing.T) {
	for _, base := range []string{"pki/ca", "pki/front-proxy-ca", "pki/etcd/ca"} {
		t.Run(base, func(t *testing.T) {
			dir := stateCopy(t)
			if err := os.Remove(filepath.Join(dir, base+".key")); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, dir)
			_, _, err := Ensure(dir, externalRequest, testNow)
			if !errors.Is(err, ErrCAUnusable) {
				t.Fatalf("Ensure: %v, want ErrCAUnusable", err)
			}
			msg := err.Error()
			for _, want := range []string{filepath.Join(dir, base+".key"), "does not exist", "restore"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", msg, want)
				}
			}
			if diff := changedFiles(before, snapshot(t, dir)); len(diff) != 0 {
				t.Errorf("a failed run wrote %v", diff)
			}
			if _, err := Load(dir); !errors.Is(err, ErrCAUnusable) {
				t.Errorf("Load: %v, want ErrCAUnusable", err)
			}
		})
	}
}

func TestCAKeyWithoutCertIsAnError(t *testing.T) {
	dir := stateCopy(t)
	os.Remove(filepath.Join(dir, "pki/ca.crt"))
	_, _, err := Ensure(dir, externalRequest, testNow)
	if !errors.Is(err, ErrCAUnusable) || !strings.Contains(err.Error(), "ca.crt does not exist") {
		t.Fatalf("Ensure: %v", err)
	}
}

func TestCAKeyMismatchIsAnError(t *testing.T) {
	dir := stateCopy(t)
	other, err := os.ReadFile(filepath.Join(dir, "pki/front-proxy-ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pki/ca.key"), other, 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = Ensure(dir, externalRequest, testNow)
	if !errors.Is(err, ErrCAUnusable) || !strings.Contains(err.Error(), "key does not match") ||
		!strings.Contains(err.Error(), filepath.Join(dir, "pki/ca.key")) {
		t.Fatalf("Ensure: %v", err)
	}
}

func TestServiceAccountKeyIsNeverReplaced(t *testing.T) {
	dir := stateCopy(t)
	os.Remove(filepath.Join(dir, saKeyFile))
	if _, _, err := Ensure(dir, externalRequest, testNow); !errors.Is(err, ErrCAUnusable) {
		t.Fatalf("Ensure without sa.key: %v", err)
	}
	// sa.pub alone is derived and is rewritten.
	dir = stateCopy(t)
	before := snapshot(t, dir)
	os.Remove(filepath.Join(dir, saPubFile))
	_, changes, err := Ensure(dir, externalRequest, testNow)
	if err != nil || !slices.Equal(changePaths(changes), []string{saPubFile}) {
		t.Fatalf("Ensure without sa.pub: %v, %v", err, changes)
	}
	if diff := changedFiles(before, snapshot(t, dir)); len(diff) != 0 {
		t.Errorf("sa.pub rewritten differently: %v", diff)
	}
}

func TestBrokenLeafIsReissued(t *testing.T) {
	dir := stateCopy(t)
	os.Remove(filepath.Join(dir, "pki/etcd/members/etcd-1/server.crt"))
	_, changes, err := Ensure(dir, externalRequest, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if got := changePaths(changes); !slices.Equal(got, []string{"pki/etcd/members/etcd-1/server.crt"}) {
		t.Errorf("changes %v", got)
	}
}

func TestKeyModeWiderThan0600IsRefused(t *testing.T) {
	for _, rel := range []string{"pki/ca.key", "pki/etcd/members/etcd-1/peer.key", "pki/sa.key", "secrets.json"} {
		t.Run(rel, func(t *testing.T) {
			dir := stateCopy(t)
			path := filepath.Join(dir, rel)
			if err := os.Chmod(path, 0o640); err != nil {
				t.Fatal(err)
			}
			for name, run := range map[string]func() error{
				"Ensure": func() error { _, _, err := Ensure(dir, externalRequest, testNow); return err },
				"Load":   func() error { _, err := Load(dir); return err },
			} {
				err := run()
				if !errors.Is(err, ErrInsecureMode) {
					t.Fatalf("%s: %v, want ErrInsecureMode", name, err)
				}
				if !strings.Contains(err.Error(), "chmod 600 "+path) {
					t.Errorf("%s: error %q does not say how to fix it", name, err)
				}
			}
			if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
				t.Error("kprov changed the mode itself")
			}
		})
	}
}

func TestStateDirectoryModeIsChecked(t *testing.T) {
	dir := stateCopy(t)
	os.Chmod(dir, 0o755)
	_, _, err := Ensure(dir, externalRequest, testNow)
	if !errors.Is(err, ErrInsecureMode) || !strings.Contains(err.Error(), "chmod 700 "+dir) {
		t.Fatalf("Ensure: %v", err)
	}
}

func TestNewStateDirectoryIs0700(t *testing.T) {
	dir := filepath.Join(t.TempDir(), ".kprov", "prod")
	if _, _, err := Ensure(dir, Request{}, testNow); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Dir(dir), dir, filepath.Join(dir, "pki")} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v, want 0700", d, fi.Mode(), err)
		}
	}
}

func TestStackedEtcd(t *testing.T) {
	dir := stateCopy(t)
	s, changes, err := Ensure(dir, Request{}, testNow)
	if err != nil || len(changes) != 0 {
		t.Fatalf("Ensure: %v, %v", err, changes)
	}
	if s.External() || s.APIServerEtcdClient != nil || len(s.EtcdMembers) != 0 {
		t.Error("stacked state carries external etcd certificates")
	}
	if s.EtcdHealthcheckClient == nil || s.EtcdHealthcheckClient.Cert.CheckSignatureFrom(s.EtcdCA.Cert) != nil {
		t.Error("stacked state has no etcd client certificate from its etcd CA, for kprov's own checks of the members")
	}
	// A stacked state made before kprov checked stacked members gains that
	// certificate, and nothing else changes.
	if err := os.Remove(filepath.Join(dir, "pki/etcd/healthcheck-client.crt")); err != nil {
		t.Fatal(err)
	}
	if _, changes, err := Ensure(dir, Request{}, testNow); err != nil || len(changes) != 1 || changes[0].Path != "pki/etcd/healthcheck-client.crt" {
		t.Fatalf("Ensure without the client certificate: %v, %v", err, changes)
	}
	files, err := s.FilesFor("cp-1", inventory.RoleMaster)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/ca.key",
		"/etc/kubernetes/pki/etcd/ca.crt", "/etc/kubernetes/pki/etcd/ca.key",
		"/etc/kubernetes/pki/front-proxy-ca.crt", "/etc/kubernetes/pki/front-proxy-ca.key",
		"/etc/kubernetes/pki/sa.key", "/etc/kubernetes/pki/sa.pub",
	}
	if got := filePaths(files); !slices.Equal(got, want) {
		t.Errorf("master files %v, want %v", got, want)
	}
	if _, err := s.FilesFor("cp-1", inventory.RoleEtcd); err == nil {
		t.Error("role etcd with stacked etcd succeeded")
	}
}

func filePaths(files []File) []string {
	var out []string
	for _, f := range files {
		out = append(out, f.Path)
	}
	return out
}

func TestFilesForExternal(t *testing.T) {
	s := mustLoad(t, stateCopy(t))
	master, err := s.FilesFor("cp-1", inventory.RoleMaster)
	if err != nil {
		t.Fatal(err)
	}
	wantMaster := []string{
		"/etc/kubernetes/pki/apiserver-etcd-client.crt", "/etc/kubernetes/pki/apiserver-etcd-client.key",
		"/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/ca.key",
		"/etc/kubernetes/pki/etcd/ca.crt",
		"/etc/kubernetes/pki/front-proxy-ca.crt", "/etc/kubernetes/pki/front-proxy-ca.key",
		"/etc/kubernetes/pki/sa.key", "/etc/kubernetes/pki/sa.pub",
	}
	if got := filePaths(master); !slices.Equal(got, wantMaster) {
		t.Errorf("master files %v, want %v", got, wantMaster)
	}
	etcd, err := s.FilesFor("etcd-2", inventory.RoleEtcd)
	if err != nil {
		t.Fatal(err)
	}
	wantEtcd := []string{
		"/etc/kubernetes/pki/etcd/ca.crt",
		"/etc/kubernetes/pki/etcd/healthcheck-client.crt", "/etc/kubernetes/pki/etcd/healthcheck-client.key",
		"/etc/kubernetes/pki/etcd/peer.crt", "/etc/kubernetes/pki/etcd/peer.key",
		"/etc/kubernetes/pki/etcd/server.crt", "/etc/kubernetes/pki/etcd/server.key",
	}
	if got := filePaths(etcd); !slices.Equal(got, wantEtcd) {
		t.Errorf("etcd files %v, want %v", got, wantEtcd)
	}
	for _, f := range slices.Concat(master, etcd) {
		isKey := strings.HasSuffix(f.Path, ".key")
		if f.Secret != isKey || (isKey && f.Mode != 0o600) || (!isKey && f.Mode != 0o644) {
			t.Errorf("%s: secret=%v mode %04o", f.Path, f.Secret, f.Mode)
		}
	}
	server := etcd[slices.IndexFunc(etcd, func(f File) bool { return f.Path == "/etc/kubernetes/pki/etcd/server.crt" })]
	if !bytes.Equal(server.Content, s.EtcdMembers["etcd-2"].Server.CertPEM) {
		t.Error("etcd-2 received another member's server certificate")
	}
	// A host that is both master and etcd gets etcd/ca.crt once.
	both, err := s.FilesFor("etcd-1", inventory.RoleMaster, inventory.RoleEtcd)
	if err != nil {
		t.Fatal(err)
	}
	if len(both) != len(wantMaster)+len(wantEtcd)-1 {
		t.Errorf("master+etcd: %d files: %v", len(both), filePaths(both))
	}
	for _, r := range []inventory.Role{inventory.RoleCompute, inventory.RoleInfra} {
		if files, err := s.FilesFor("w-1", r); err != nil || len(files) != 0 {
			t.Errorf("%s: %v %v, want no files", r, filePaths(files), err)
		}
	}
	if _, err := s.FilesFor("w-1", inventory.Role("bastion")); err == nil {
		t.Error("an unknown role was accepted")
	}
}

func TestLoadMatchesEnsure(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if _, err := Load(dir); err == nil {
		t.Error("Load of a missing directory succeeded")
	}
	dir = stateCopy(t)
	s, _, err := Ensure(dir, externalRequest, testNow)
	if err != nil {
		t.Fatal(err)
	}
	l := mustLoad(t, dir)
	if !bytes.Equal(s.CA.CertPEM, l.CA.CertPEM) || l.Secrets != s.Secrets || len(l.EtcdMembers) != 3 {
		t.Error("Load differs from Ensure")
	}
	os.Remove(filepath.Join(dir, secretsFile))
	if _, err := Load(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load without secrets.json: %v", err)
	}
}

func TestRequestValidation(t *testing.T) {
	for _, members := range [][]Member{
		{{Name: "../x", Address: "10.0.0.1"}},
		{{Name: "", Address: "10.0.0.1"}},
		{{Name: "a", Address: "10.0.0.1"}, {Name: "a", Address: "10.0.0.2"}},
		{{Name: "a"}},
	} {
		dir := filepath.Join(t.TempDir(), "state")
		if _, _, err := Ensure(dir, Request{EtcdMembers: members}, testNow); err == nil {
			t.Errorf("%v accepted", members)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("%v: state directory created for an invalid request", members)
		}
	}
}

func TestDiscoveryHash(t *testing.T) {
	// The certificate and hash were made with openssl, independently of this code:
	//   openssl x509 -pubkey -noout -in discovery-ca.crt | openssl pkey -pubin -outform der | sha256sum
	certPEM, err := os.ReadFile("testdata/discovery-ca.crt")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/discovery-ca.hash")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := parseCert(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if got := DiscoveryHash(cert); got != strings.TrimSpace(string(want)) {
		t.Errorf("DiscoveryHash = %s, want %s", got, want)
	}
	s := mustLoad(t, stateCopy(t))
	if h := s.DiscoveryHash(); !strings.HasPrefix(h, "sha256:") || len(h) != 7+64 {
		t.Errorf("State.DiscoveryHash = %q", h)
	}
}

func TestExpiredCAIsAnError(t *testing.T) {
	dir := stateCopy(t)
	_, _, err := Ensure(dir, externalRequest, testNow.Add(CAValidity+time.Hour))
	if !errors.Is(err, ErrCAUnusable) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("Ensure after the CA expired: %v", err)
	}
}

func TestFirstRunReportsEveryFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	_, changes, err := Ensure(dir, Request{EtcdMembers: externalRequest.EtcdMembers[:1]}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"pki/apiserver-etcd-client.crt", "pki/ca.crt", "pki/etcd/ca.crt", "pki/etcd/healthcheck-client.crt",
		"pki/etcd/members/etcd-1/peer.crt", "pki/etcd/members/etcd-1/server.crt",
		"pki/front-proxy-ca.crt", "pki/sa.key", "pki/sa.pub", "secrets.json",
	}
	if got := changePaths(changes); !slices.Equal(got, want) {
		t.Errorf("changes %v, want %v", got, want)
	}
}
