package pki

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func leafBases(ls []Leaf) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Base)
	}
	return out
}

func TestEtcdLeaves(t *testing.T) {
	s := mustLoad(t, stateCopy(t))
	got := leafBases(s.EtcdLeaves())
	want := []string{"pki/apiserver-etcd-client", "pki/etcd/healthcheck-client",
		"pki/etcd/members/etcd-1/peer", "pki/etcd/members/etcd-1/server",
		"pki/etcd/members/etcd-2/peer", "pki/etcd/members/etcd-2/server",
		"pki/etcd/members/etcd-3/peer", "pki/etcd/members/etcd-3/server"}
	if !slices.Equal(got, want) {
		t.Errorf("EtcdLeaves = %v, want %v", got, want)
	}
}

// TestReissueAndSave: reissuing changes nothing on disk until Save; Save
// keeps the old pair in the history, writes the new one, and Load then
// sees it; the CA and every other file stay.
func TestReissueAndSave(t *testing.T) {
	dir := stateCopy(t)
	s := mustLoad(t, dir)
	before := snapshot(t, dir)
	later := testNow.Add(200 * 24 * time.Hour)
	bases := []string{"pki/etcd/members/etcd-2/server", "pki/etcd/members/etcd-3/peer", "pki/apiserver-etcd-client", "pki/etcd/members/etcd-2/server"}
	ns, r, err := s.ReissueEtcdLeaves(externalRequest, bases, later)
	if err != nil {
		t.Fatal(err)
	}
	if d := changedFiles(before, snapshot(t, dir)); len(d) != 0 {
		t.Fatalf("reissuing wrote %v before Save", d)
	}
	if got := leafBases(r.Leaves()); !slices.Equal(got, []string{"pki/apiserver-etcd-client", "pki/etcd/members/etcd-2/server", "pki/etcd/members/etcd-3/peer"}) {
		t.Errorf("renewed %v", got)
	}
	// The original state is untouched; the copy carries the new pairs.
	if ns.EtcdMembers["etcd-2"].Server == s.EtcdMembers["etcd-2"].Server || s.EtcdMembers["etcd-2"].Server.Cert.NotAfter.After(testNow.Add(LeafValidity)) {
		t.Error("the original state changed, or the copy did not")
	}
	if ns.EtcdMembers["etcd-2"].Peer != s.EtcdMembers["etcd-2"].Peer || ns.EtcdHealthcheckClient != s.EtcdHealthcheckClient {
		t.Error("a leaf that was not asked for was reissued")
	}
	if got := ns.EtcdMembers["etcd-2"].Server.Cert.NotAfter; !got.Equal(later.Add(LeafValidity).UTC()) {
		t.Errorf("new not-after %v", got)
	}
	if err := VerifyMemberCert(ns.EtcdCA.Cert, ns.EtcdMembers["etcd-3"].Peer.CertPEM, "etcd-3", "etcd-3.example.internal", later); err != nil {
		t.Errorf("renewed etcd-3 peer: %v", err)
	}

	changes, err := r.Save(later)
	if err != nil {
		t.Fatal(err)
	}
	if got := changePaths(changes); !slices.Equal(got, []string{"pki/apiserver-etcd-client.crt", "pki/etcd/members/etcd-2/server.crt", "pki/etcd/members/etcd-3/peer.crt"}) {
		t.Errorf("changes %v", got)
	}
	after := snapshot(t, dir)
	hist := filepath.Join(HistoryDir, "20260917T120000.000Z")
	wantChanged := []string{
		"pki/apiserver-etcd-client.crt", "pki/apiserver-etcd-client.key",
		"pki/etcd/members/etcd-2/server.crt", "pki/etcd/members/etcd-2/server.key",
		"pki/etcd/members/etcd-3/peer.crt", "pki/etcd/members/etcd-3/peer.key",
	}
	var want []string
	for _, f := range wantChanged {
		want = append(want, filepath.Join(hist, f), f)
	}
	slices.Sort(want)
	if got := changedFiles(before, after); !slices.Equal(got, want) {
		t.Errorf("changed files:\n%v\nwant\n%v", got, want)
	}
	for _, f := range wantChanged {
		if !bytes.Equal(after[filepath.Join(hist, f)], before[f]) {
			t.Errorf("history holds another %s than the old one", f)
		}
		fi, err := os.Stat(filepath.Join(dir, hist, f))
		if err != nil {
			t.Fatal(err)
		}
		if wantMode := map[bool]os.FileMode{true: 0o600, false: 0o644}[strings.HasSuffix(f, ".key")]; fi.Mode().Perm() != wantMode {
			t.Errorf("%s in the history: mode %04o, want %04o", f, fi.Mode().Perm(), wantMode)
		}
	}
	loaded := mustLoad(t, dir)
	if !bytes.Equal(loaded.EtcdMembers["etcd-2"].Server.CertPEM, ns.EtcdMembers["etcd-2"].Server.CertPEM) {
		t.Error("Load does not see the saved certificate")
	}
	// Ensure accepts what was saved: nothing is reissued again.
	if _, ch, err := Ensure(dir, externalRequest, later); err != nil || len(ch) != 0 {
		t.Errorf("Ensure after the renewal: %v %v", ch, err)
	}
}

func TestReissueRefusesUnknownLeavesAndMembers(t *testing.T) {
	s := mustLoad(t, stateCopy(t))
	if _, _, err := s.ReissueEtcdLeaves(externalRequest, []string{"pki/ca"}, testNow); err == nil || !strings.Contains(err.Error(), "not an etcd certificate kprov issued") {
		t.Errorf("the CA: %v", err)
	}
	req := Request{EtcdMembers: externalRequest.EtcdMembers[:2]}
	if _, _, err := s.ReissueEtcdLeaves(req, []string{"pki/etcd/members/etcd-3/server"}, testNow); err == nil || !strings.Contains(err.Error(), "etcd member etcd-3 is not in the inventory") {
		t.Errorf("a member not in the inventory: %v", err)
	}
}

func TestVerifyMemberCert(t *testing.T) {
	s := mustLoad(t, stateCopy(t))
	m := s.EtcdMembers["etcd-1"]
	if err := VerifyMemberCert(s.EtcdCA.Cert, m.Server.CertPEM, "etcd-1", "10.0.0.11", testNow); err != nil {
		t.Fatalf("a good certificate: %v", err)
	}
	for name, tc := range map[string]struct {
		cert          []byte
		member, addr  string
		now           time.Time
		wantSubstring string
	}{
		"another member's address": {m.Server.CertPEM, "etcd-1", "10.0.0.12", testNow, "not valid for etcd-1 at 10.0.0.12"},
		"another member's name":    {m.Server.CertPEM, "etcd-2", "10.0.0.11", testNow, "not the member's name etcd-2"},
		"expired":                  {m.Server.CertPEM, "etcd-1", "10.0.0.11", testNow.Add(LeafValidity + time.Hour), "expired"},
		"a client certificate":     {s.APIServerEtcdClient.CertPEM, "kube-apiserver-etcd-client", "10.0.0.11", testNow, "not valid"},
		"another CA":               {s.CA.CertPEM, "kubernetes", "10.0.0.11", testNow, "not valid"},
		"not a certificate":        {[]byte("junk"), "etcd-1", "10.0.0.11", testNow, "no PEM certificate"},
	} {
		t.Run(name, func(t *testing.T) {
			err := VerifyMemberCert(s.EtcdCA.Cert, tc.cert, tc.member, tc.addr, tc.now)
			if err == nil || !strings.Contains(err.Error(), tc.wantSubstring) {
				t.Errorf("got %v, want an error with %q", err, tc.wantSubstring)
			}
		})
	}
	// Signed by another CA with the right names.
	other, err := newCA(EtcdCACommonName, testNow)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := other.sign(memberSpec(Member{Name: "etcd-1", Address: "10.0.0.11"}), testNow)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyMemberCert(s.EtcdCA.Cert, forged.CertPEM, "etcd-1", "10.0.0.11", testNow); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("signed by another etcd CA: %v", err)
	}
}
