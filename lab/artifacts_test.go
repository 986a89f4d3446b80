package lab

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStagingModules(t *testing.T) {
	gomod := `module k8s.io/kubernetes

go 1.24.0

require github.com/spf13/cobra v1.9.1

require (
	k8s.io/api v0.0.0
	k8s.io/klog/v2 v2.130.1
	k8s.io/apimachinery v0.0.0
	github.com/other/thing v0.0.0
)

require k8s.io/kubelet v0.0.0

replace (
	k8s.io/api => ./staging/src/k8s.io/api
	k8s.io/apimachinery => ./staging/src/k8s.io/apimachinery
)
`
	got := strings.Join(StagingModules(gomod), " ")
	if want := "k8s.io/api k8s.io/apimachinery k8s.io/kubelet"; got != want {
		t.Errorf("StagingModules = %q, want %q", got, want)
	}
}

func TestManifestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), ManifestFile)
	m, err := readManifest(path)
	if err != nil || len(m) != 0 {
		t.Fatalf("missing manifest: %v, %v", m, err)
	}
	want := map[string]string{
		"kubernetes-v1.37.2/kubeadm": strings.Repeat("b", 64),
		"etcd-v3.6.16/etcd":          strings.Repeat("a", 64),
	}
	if err := writeManifest(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := readManifest(path)
	if err != nil || len(got) != 2 || got["etcd-v3.6.16/etcd"] != want["etcd-v3.6.16/etcd"] {
		t.Errorf("round trip = %v, %v", got, err)
	}
}

// Only a proxy or network failure may make a test skip; a broken build must fail it.
func TestGoErrorClassification(t *testing.T) {
	for _, c := range []struct {
		stderr string
		skip   bool
	}{
		{"k8s.io/kube-proxy@v0.30.9: reading https://goproxy.example.internal/k8s.io/kube-proxy/@v/v0.30.9.zip: 403 Forbidden", true},
		{"dial tcp: lookup goproxy.example.internal: no such host", true},
		{"verifying module: reading https://sumdb.example.internal/lookup/x@v1: 404 Not Found", true},
		{"./main.go:3:2: undefined: foo", false},
		{"go: k8s.io/kubernetes@v1.37.2 requires go >= 1.30", false},
	} {
		err := goError(&CommandError{Command: "go get", Stderr: c.stderr, Err: errors.New("exit status 1")}, c.stderr)
		if got := errors.Is(err, ErrToolchain); got != c.skip {
			t.Errorf("%q: errors.Is(ErrToolchain) = %v, want %v", c.stderr, got, c.skip)
		}
	}
}

func TestBuildRejectsBadVersions(t *testing.T) {
	dir := t.TempDir()
	for _, v := range []string{"../../etc", "1.30", "2.0.0", "latest"} {
		if _, err := BuildKubeadm(t.Context(), dir, v, nil); err == nil || errors.Is(err, ErrToolchain) {
			t.Errorf("BuildKubeadm(%q) = %v, want a version error", v, err)
		}
	}
	if _, err := BuildArtifacts(t.Context(), dir, Versions{Etcd: "3.6/../x"}, nil); err == nil {
		t.Error("BuildArtifacts accepted etcd version 3.6/../x")
	}
}

// CachedArtifacts offers only binaries whose file still matches SHA256SUMS.
func TestCachedArtifacts(t *testing.T) {
	dir := t.TempDir()
	write := func(rel, content string) string {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
		sum, err := fileSHA256(p)
		if err != nil {
			t.Fatal(err)
		}
		return sum
	}
	m := map[string]string{
		"etcd-v3.6.16/etcd":          write("etcd-v3.6.16/etcd", "etcd"),
		"kubernetes-v1.37.2/kubeadm": write("kubernetes-v1.37.2/kubeadm", "kubeadm"),
		"etcd-v3.6.16/etcdctl":       strings.Repeat("0", 64), // recorded, but the file differs
	}
	write("etcd-v3.6.16/etcdctl", "changed since")
	if err := writeManifest(filepath.Join(dir, ManifestFile), m); err != nil {
		t.Fatal(err)
	}
	got, err := CachedArtifacts(dir, Versions{Etcd: "3.6.16", Kubernetes: "1.37.2"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range got {
		names = append(names, a.Name)
		if a.SHA256 != m[strings.TrimPrefix(a.Path, dir+"/")] {
			t.Errorf("%s: sha256 %s", a.Name, a.SHA256)
		}
	}
	if strings.Join(names, ",") != "etcd,kubeadm" {
		t.Errorf("cached artifacts %v, want etcd,kubeadm", names)
	}
	if none, _ := CachedArtifacts(filepath.Join(dir, "empty"), Versions{}); len(none) != 0 {
		t.Errorf("an empty cache offered %v", none)
	}
}
