package backup

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// stateFixture is a backup whose state/ holds what a state directory of an
// external-etcd cluster holds, per kind of file.
func stateFixture(t *testing.T, ca string) *Backup {
	t.Helper()
	snap, st := checkedSnapshot(t)
	dir := t.TempDir()
	files := map[string]string{
		"pki/ca.crt": ca, "pki/ca.key": "ca key", "pki/sa.key": "sa key", "pki/etcd/ca.crt": "etcd ca",
		"pki/etcd/healthcheck-client.crt": "client", "pki/etcd/members/etcd-1/server.crt": "old member",
		"secrets.json": "old secrets", "admin.conf": "old endpoint",
	}
	sources := []Source{{Name: SnapshotName, Path: snap}}
	for rel, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o600)
		if strings.HasSuffix(rel, ".crt") {
			mode = 0o644
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		sources = append(sources, Source{Name: StatePrefix + rel, Path: p})
	}
	m := Manifest{Cluster: "lab", EtcdMode: "external", Revision: st.Revision, TotalKeys: st.TotalKeys, SnapshotHash: st.Hash}
	var buf bytes.Buffer
	if _, err := Write(&buf, m, sources); err != nil {
		t.Fatal(err)
	}
	b, err := Open(&buf, Options{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestInstallState: the CAs, keys and client certificates are carried with
// their modes; per-member certificates, join secrets and the admin
// kubeconfig are not; a second run writes nothing; another cluster's CA is
// refused, naming both and how to move it away.
func TestInstallState(t *testing.T) {
	b := stateFixture(t, "the CA")
	dir := filepath.Join(t.TempDir(), "state")
	res, err := b.InstallState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(res.Written, " "); !strings.HasSuffix(got, "pki/ca.crt") || len(res.Written) != 5 {
		t.Errorf("written %q: want the 5 carried files, the CA certificate last", got)
	}
	for _, rel := range []string{"pki/etcd/members/etcd-1/server.crt", "secrets.json", "admin.conf"} {
		if _, err := os.Stat(filepath.Join(dir, rel)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s carried into the new state directory (%v)", rel, err)
		}
		if res.Skipped[rel] == "" {
			t.Errorf("%s left out without a reason", rel)
		}
	}
	for rel, mode := range map[string]os.FileMode{"pki/ca.key": 0o600, "pki/ca.crt": 0o644, "pki/sa.key": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, rel))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v, mode %v, want %v", rel, err, fi.Mode().Perm(), mode)
		}
	}
	if again, err := b.InstallState(dir); err != nil || len(again.Written) != 0 {
		t.Errorf("second install: wrote %v, err %v; want nothing", again.Written, err)
	}

	// An interrupted install (no CA certificate yet) completes.
	if err := os.Remove(filepath.Join(dir, "pki/ca.crt")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.InstallState(dir); err != nil {
		t.Fatalf("completing an interrupted install: %v", err)
	}

	other := stateFixture(t, "another CA")
	_, err = other.InstallState(dir)
	var foreign *ForeignCAError
	if !errors.As(err, &foreign) || !strings.Contains(err.Error(), "mv "+dir+" "+dir+".old") {
		t.Fatalf("another cluster's CA: %v", err)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "pki/ca.crt")); string(data) != "the CA" {
		t.Errorf("the CA was replaced: %q", data)
	}
}
