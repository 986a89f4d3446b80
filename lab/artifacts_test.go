package lab

import (
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
