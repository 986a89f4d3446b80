package lab

import (
	"errors"
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
		{"k8s.io/kube-proxy@v0.30.9: reading https://proxy.golang.org/k8s.io/kube-proxy/@v/v0.30.9.zip: 403 Forbidden", true},
		{"dial tcp: lookup proxy.golang.org: no such host", true},
		{"verifying module: reading https://sum.golang.org/lookup/x@v1: 404 Not Found", true},
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
