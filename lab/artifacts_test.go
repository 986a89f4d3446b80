package lab

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/charmbracelet/log"
	"github.com/klauspost/compress/gzip"
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
	for _, v := range []string{"../../etc", "3.6", "", "latest"} {
		if _, err := BuildEtcd(t.Context(), dir, v, nil); err == nil || errors.Is(err, ErrToolchain) {
			t.Errorf("BuildEtcd(%q) = %v, want a version error", v, err)
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
		"etcd-v3.6.16/etcd":                   write("etcd-v3.6.16/etcd", "etcd"),
		"kubernetes-v1.37.2/kubeadm":          write("kubernetes-v1.37.2/kubeadm", "kubeadm"),
		"etcd-v3.6.16/etcdctl":                strings.Repeat("0", 64), // recorded, but the file differs
		"containerd-v2.4.2/containerd":        write("containerd-v2.4.2/containerd", "containerd"),
		"cni-plugins-v1.10.0/cni-plugins.tgz": write("cni-plugins-v1.10.0/cni-plugins.tgz", "tgz"),
		"kubernetes-v1.37.2/kube-apiserver":   write("kubernetes-v1.37.2/kube-apiserver", "only inside an image"),
	}
	write("etcd-v3.6.16/etcdctl", "changed since")
	proxyRel, _, err := apiProxyBuildOf()
	if err != nil {
		t.Fatal(err)
	}
	m[proxyRel] = write(proxyRel, "kprov-apiproxy")
	// A proxy built from another kprov's source is not this one.
	m["apiproxy-0123456789ab/kprov-apiproxy"] = write("apiproxy-0123456789ab/kprov-apiproxy", "old proxy")
	pause := filepath.Join(dir, "images-v1.37.2", "pause_3.10.2.tar")
	os.MkdirAll(filepath.Dir(pause), 0o755)
	if _, err := writeImageArchive(pause, binaryImage("registry.k8s.io/pause:3.10.2", "pause", filepath.Join(dir, "etcd-v3.6.16/etcd"))); err != nil {
		t.Fatal(err)
	}
	m["images-v1.37.2/pause_3.10.2.tar"], _ = fileSHA256(pause)
	m["images-v1.36.0/pause_3.10.1.tar"] = strings.Repeat("1", 64) // another version's
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
		if a.Image != strings.HasSuffix(a.Path, ".tar") {
			t.Errorf("%s: Image %v", a.Path, a.Image)
		}
	}
	if want := "etcd,kubeadm,containerd,cni-plugins,kprov-apiproxy,registry.k8s.io/pause:3.10.2"; strings.Join(names, ",") != want {
		t.Errorf("cached artifacts %v, want %s", names, want)
	}
	if none, _ := CachedArtifacts(filepath.Join(dir, "empty"), Versions{}); len(none) != 0 {
		t.Errorf("an empty cache offered %v", none)
	}
}

// All seven Kubernetes commands come from one go build with the staging
// replaces and the version stamped in; the other builds are one go build
// each except etcd, whose main packages all end in /v3.
func TestBuildCommandLines(t *testing.T) {
	gomod := "module k8s.io/kubernetes\n\nrequire (\n\tk8s.io/api v0.0.0\n\tk8s.io/client-go v0.0.0\n)\n"
	b, err := kubernetesBuildFromGoMod("v1.37.2", kubernetesCommands, gomod)
	if err != nil {
		t.Fatal(err)
	}
	if want := "replace k8s.io/api => k8s.io/api v0.37.2\nreplace k8s.io/client-go => k8s.io/client-go v0.37.2\n"; b.gomod != want {
		t.Errorf("go.mod directives %q, want %q", b.gomod, want)
	}
	if len(b.gets) != 7 || b.gets[0] != "k8s.io/kubernetes/cmd/kubeadm@v1.37.2" {
		t.Errorf("go get %v", b.gets)
	}
	cmds := b.commands("/cache/kubernetes-v1.37.2/.build-1")
	want := "build -trimpath -ldflags -s -w -X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/component-base/version.gitTreeState=clean" +
		" -o /cache/kubernetes-v1.37.2/.build-1/ k8s.io/kubernetes/cmd/kubeadm k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubectl" +
		" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy"
	if len(cmds) != 1 || strings.Join(cmds[0], " ") != want {
		t.Errorf("kubernetes build:\n%q\nwant one command\n%s", cmds, want)
	}
	if _, err := kubernetesBuildFromGoMod("v1.37.2", []string{"kubeadm"}, "module k8s.io/kubernetes\n"); err == nil {
		t.Error("a go.mod without staging modules was accepted")
	}

	cd := containerdBuild("v2.4.2", []string{"containerd", "ctr", "containerd-shim-runc-v2"}).commands("/o")
	want = "build -trimpath -tags no_btrfs,no_devmapper,no_zfs -ldflags -s -w -X github.com/containerd/containerd/v2/version.Version=v2.4.2 -o /o/" +
		" github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/ctr github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	if len(cd) != 1 || strings.Join(cd[0], " ") != want {
		t.Errorf("containerd build:\n%q\nwant\n%s", cd, want)
	}

	cni := cniBuild("v1.10.0")
	cniCmds := cni.commands("/o")
	if len(cniCmds) != 1 || !strings.Contains(strings.Join(cniCmds[0], " "), "-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=v1.10.0 -o /o/ ") {
		t.Errorf("CNI build: %q", cniCmds)
	}
	for _, p := range []string{"bridge", "host-local", "loopback", "portmap"} {
		if !slices.ContainsFunc(cni.pkgs, func(pkg string) bool { return strings.HasSuffix(pkg, "/"+p) }) {
			t.Errorf("CNI build lacks %s", p)
		}
	}

	etcd := etcdBuild("v3.6.16").commands("/o")
	var got []string
	for _, c := range etcd {
		got = append(got, strings.Join(c[len(c)-3:], " "))
	}
	wantEtcd := []string{"-o /o/etcd go.etcd.io/etcd/server/v3", "-o /o/etcdctl go.etcd.io/etcd/etcdctl/v3", "-o /o/etcdutl go.etcd.io/etcd/etcdutl/v3"}
	slices.Sort(got)
	if !slices.Equal(got, wantEtcd) {
		t.Errorf("etcd builds end %q, want %q", got, wantEtcd)
	}
}

// ensure builds only what is missing or changed, keeps the rest, and
// records what it built in the manifest at once.
func TestEnsureBuildsOnlyWhatIsMissing(t *testing.T) {
	dir := t.TempDir()
	k8s := filepath.Join(dir, "kubernetes-v1.37.2")
	os.MkdirAll(k8s, 0o755)
	c := &artifactCache{dir: dir, manifest: map[string]string{"etcd-v3.6.16/etcd": strings.Repeat("e", 64)}}
	var arts []*Artifact
	for _, n := range kubernetesCommands {
		arts = append(arts, &Artifact{Name: n, Path: filepath.Join(k8s, n)})
	}
	// An earlier cache: kubeadm, kubelet and kubectl built and recorded;
	// kubectl changed since.
	for _, n := range []string{"kubeadm", "kubelet", "kubectl"} {
		p := filepath.Join(k8s, n)
		os.WriteFile(p, []byte(n), 0o755)
		sum, _ := fileSHA256(p)
		c.manifest["kubernetes-v1.37.2/"+n] = sum
	}
	os.WriteFile(filepath.Join(k8s, "kubectl"), []byte("changed"), 0o755)
	var built []string
	build := func(missing []*Artifact) error {
		built = names(missing)
		for _, a := range missing {
			if err := os.WriteFile(a.Path, []byte("new "+a.Name), 0o755); err != nil {
				return err
			}
		}
		return nil
	}
	if err := c.ensure(arts, build); err != nil {
		t.Fatal(err)
	}
	if want := []string{"kubectl", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"}; !slices.Equal(built, want) {
		t.Errorf("built %v, want %v", built, want)
	}
	m, err := readManifest(filepath.Join(dir, ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 8 || m["etcd-v3.6.16/etcd"] != strings.Repeat("e", 64) {
		t.Errorf("manifest %v: want the seven commands and the untouched etcd entry", m)
	}
	for _, a := range arts {
		if sum, _ := fileSHA256(a.Path); a.SHA256 != sum || m["kubernetes-v1.37.2/"+a.Name] != sum {
			t.Errorf("%s: sha256 %s, file %s, manifest %s", a.Name, a.SHA256, sum, m["kubernetes-v1.37.2/"+a.Name])
		}
	}
	built = nil
	if err := c.ensure(arts, build); err != nil || built != nil {
		t.Errorf("second ensure built %v (%v), want nothing", built, err)
	}
	if err := c.ensure(arts[:1], func([]*Artifact) error { return errors.New("boom") }); err != nil {
		t.Errorf("a cached artifact ran build: %v", err)
	}
}

// A proxy refusing a module, as the go command reports it, wraps
// ErrToolchain through the build; a compile error does not.
func TestBuildWrapsToolchainErrors(t *testing.T) {
	bin := t.TempDir()
	script := "#!/bin/sh\necho \"$FAKE_GO_STDERR\" >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(bin, "go"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	b := goBuild{what: "coredns v1.14.6", gets: []string{"github.com/coredns/coredns@v1.14.6"}, pkgs: []string{buildModule + "/coredns"}}
	t.Setenv("FAKE_GO_STDERR", "go: github.com/coredns/coredns@v1.14.6: reading https://proxy.example.internal/github.com/coredns/coredns/@v/v1.14.6.info: 403 Forbidden")
	if err := buildInModule(t.Context(), b, t.TempDir(), log.New(io.Discard)); !errors.Is(err, ErrToolchain) {
		t.Errorf("proxy failure: %v, want ErrToolchain", err)
	}
	if _, err := BuildKubeadm(t.Context(), t.TempDir(), "1.37.2", nil); !errors.Is(err, ErrToolchain) {
		t.Errorf("proxy failure in BuildKubeadm: %v, want ErrToolchain", err)
	}
	if _, err := BuildEtcd(t.Context(), t.TempDir(), "3.6.15", nil); !errors.Is(err, ErrToolchain) {
		t.Errorf("proxy failure in BuildEtcd: %v, want ErrToolchain", err)
	}
	t.Setenv("FAKE_GO_STDERR", "./main.go:3:2: undefined: foo")
	if err := buildInModule(t.Context(), b, t.TempDir(), log.New(io.Discard)); err == nil || errors.Is(err, ErrToolchain) {
		t.Errorf("compile error: %v, want an error that is not ErrToolchain", err)
	}
}

// cni-plugins.tgz holds the plugins at its top level, sorted, owned by
// root, with fixed times: the same binaries give the same bytes.
func TestPackCNIPlugins(t *testing.T) {
	dir := t.TempDir()
	var files []string
	for _, n := range []string{"portmap", "bridge", "loopback", "host-local"} {
		p := filepath.Join(dir, n)
		os.WriteFile(p, []byte("plugin "+n), 0o700)
		files = append(files, p)
	}
	a, err := packCNIPlugins(files)
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(files)
	b, err := packCNIPlugins(files)
	if err != nil || !bytes.Equal(a, b) {
		t.Fatalf("packing again gave other bytes (%v)", err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(a))
	if err != nil {
		t.Fatal(err)
	}
	if zr.ModTime.Unix() > 0 || zr.Name != "" {
		t.Errorf("gzip header carries mtime %s name %q", zr.ModTime, zr.Name)
	}
	hdrs, contents := untar(t, zr)
	var got []string
	for _, h := range hdrs {
		got = append(got, h.Name)
		if h.Mode != 0o755 || h.Uid != 0 || h.Gid != 0 || h.Uname != "root" || !h.ModTime.Equal(epoch) || h.Typeflag != tar.TypeReg {
			t.Errorf("%s: mode %o uid %d gid %d uname %s mtime %s type %c", h.Name, h.Mode, h.Uid, h.Gid, h.Uname, h.ModTime, h.Typeflag)
		}
	}
	if want := []string{"bridge", "host-local", "loopback", "portmap"}; !slices.Equal(got, want) {
		t.Errorf("entries %v, want %v", got, want)
	}
	if string(contents["bridge"]) != "plugin bridge" {
		t.Errorf("bridge = %q", contents["bridge"])
	}
}
