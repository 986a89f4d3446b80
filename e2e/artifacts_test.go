//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/log"

	"github.com/kprov/kprov/lab"
)

// TestArtifacts builds (or finds cached) etcd and kubeadm and checks that
// they run and know their versions. The cache (artifactsDir) is shared with
// the other e2e tests and `kprov lab artifacts`, so CI builds once per cache.
func TestArtifacts(t *testing.T) {
	dir := artifactsDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	v := lab.Versions{Etcd: lab.DefaultEtcdVersion, Kubernetes: lab.DefaultKubernetesVersion}
	a, err := lab.BuildArtifacts(ctx, dir, v, log.New(os.Stderr))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		art  lab.Artifact
		args []string
		want string
	}{
		{a.Etcd, []string{"--version"}, "etcd Version: " + v.Etcd},
		{a.Etcdctl, []string{"version"}, "etcdctl version: " + v.Etcd},
		{a.Etcdutl, []string{"version"}, "etcdutl version: " + v.Etcd},
		{a.Kubeadm, []string{"version", "-o", "short"}, "v" + v.Kubernetes},
		{a.Kubelet, []string{"--version"}, "Kubernetes v" + v.Kubernetes},
		{a.Kubectl, []string{"version", "--client"}, "Client Version: v" + v.Kubernetes},
	} {
		out, err := exec.CommandContext(ctx, c.art.Path, c.args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), c.want) {
			t.Errorf("%s %s: %v\n%s\nwant %q", c.art.Name, strings.Join(c.args, " "), err, out, c.want)
		}
	}
	// The second call finds everything cached and builds nothing.
	start := time.Now()
	again, err := lab.BuildArtifacts(ctx, dir, v, log.New(os.Stderr))
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 10*time.Second || again != a {
		t.Errorf("second BuildArtifacts took %s and returned %+v, want the cached %+v", took, again, a)
	}
	sums := exec.CommandContext(ctx, "sha256sum", "-c", "--quiet", lab.ManifestFile)
	sums.Dir = dir
	if out, err := sums.CombinedOutput(); err != nil {
		t.Errorf("sha256sum -c %s: %v\n%s", lab.ManifestFile, err, out)
	}
}
