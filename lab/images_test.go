package lab

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
)

// untar returns a tar's entries by name, in order, and their contents.
func untar(t *testing.T, r io.Reader) ([]*tar.Header, map[string][]byte) {
	t.Helper()
	var hdrs []*tar.Header
	files := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return hdrs, files
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		hdrs = append(hdrs, h)
		files[h.Name] = data
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// The archive is the OCI image layout the import step reads: oci-layout,
// index.json naming the full reference in both annotations, and blobs whose
// names are their digests; the same inputs give the same bytes.
func TestImageArchiveLayout(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "kube-apiserver")
	if err := os.WriteFile(bin, []byte("#!/bin/true\nnot really an apiserver\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	const ref = "registry.k8s.io/kube-apiserver:v1.37.2"
	spec := binaryImage(ref, "kube-apiserver", bin)
	first, second := filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")
	digest, err := writeImageArchive(first, spec)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := writeImageArchive(second, spec); err != nil || again != digest {
		t.Fatalf("second archive: digest %s, %v; want %s", again, err, digest)
	}
	a, _ := os.ReadFile(first)
	b, _ := os.ReadFile(second)
	if !bytes.Equal(a, b) {
		t.Fatal("the same image written twice differs")
	}

	hdrs, files := untar(t, bytes.NewReader(a))
	var names []string
	for _, h := range hdrs {
		names = append(names, h.Name)
		if !h.ModTime.Equal(epoch) || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: mtime %s uid %d gid %d", h.Name, h.ModTime, h.Uid, h.Gid)
		}
	}
	if len(names) < 2 || names[0] != "oci-layout" || names[1] != "index.json" {
		t.Errorf("archive starts %v, want oci-layout, index.json", names)
	}
	if got := string(files["oci-layout"]); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %s", got)
	}
	for name, data := range files {
		if hexSum, ok := strings.CutPrefix(name, "blobs/sha256/"); ok && hexSum != "" && sha256Hex(data) != hexSum {
			t.Errorf("blob %s holds data with digest %s", name, sha256Hex(data))
		}
	}
	var index v1.IndexManifest
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if index.SchemaVersion != 2 || len(index.Manifests) != 1 {
		t.Fatalf("index.json = %s", files["index.json"])
	}
	desc := index.Manifests[0]
	if desc.Annotations[annotationContainerdName] != ref || desc.Annotations[annotationRefName] != ref {
		t.Errorf("annotations %v, want both %s", desc.Annotations, ref)
	}
	if desc.Digest.String() != digest || desc.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("descriptor %+v, want manifest %s", desc, digest)
	}
	manifestBlob, ok := files["blobs/sha256/"+desc.Digest.Hex]
	if !ok || int64(len(manifestBlob)) != desc.Size {
		t.Fatalf("manifest blob missing or of the wrong size")
	}
	var manifest v1.Manifest
	if err := json.Unmarshal(manifestBlob, &manifest); err != nil {
		t.Fatal(err)
	}
	var config v1.ConfigFile
	if err := json.Unmarshal(files["blobs/sha256/"+manifest.Config.Digest.Hex], &config); err != nil {
		t.Fatal(err)
	}
	if config.OS != "linux" || config.Architecture != "amd64" {
		t.Errorf("config platform %s/%s, want linux/amd64", config.OS, config.Architecture)
	}
	if !slices.Equal(config.Config.Entrypoint, []string{"/usr/local/bin/kube-apiserver"}) || !slices.ContainsFunc(config.Config.Env, func(e string) bool {
		return strings.HasPrefix(e, "PATH=") && strings.Contains(e, ":/usr/local/bin:")
	}) {
		t.Errorf("config entrypoint %v env %v: kubeadm's `command: [kube-apiserver]` must resolve", config.Config.Entrypoint, config.Config.Env)
	}
	if len(manifest.Layers) != 1 || manifest.Layers[0].MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" {
		t.Fatalf("layers %+v, want one gzipped OCI layer", manifest.Layers)
	}
	zr, err := gzip.NewReader(bytes.NewReader(files["blobs/sha256/"+manifest.Layers[0].Digest.Hex]))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if len(config.RootFS.DiffIDs) != 1 || config.RootFS.DiffIDs[0].Hex != sha256Hex(raw) {
		t.Errorf("config diff IDs %v, want the uncompressed layer's sha256:%s", config.RootFS.DiffIDs, sha256Hex(raw))
	}
	layerHdrs, layerFiles := untar(t, bytes.NewReader(raw))
	modes := map[string]int64{}
	var layerNames []string
	for _, h := range layerHdrs {
		modes[h.Name] = h.Mode
		layerNames = append(layerNames, h.Name)
	}
	if !slices.IsSorted(layerNames) {
		t.Errorf("layer entries not sorted: %v", layerNames)
	}
	for name, mode := range map[string]int64{"etc/": 0o755, "etc/group": 0o644, "etc/passwd": 0o644, "tmp/": 0o1777, "usr/local/bin/": 0o755, "usr/local/bin/kube-apiserver": 0o755} {
		if got, ok := modes[name]; !ok || got != mode {
			t.Errorf("layer entry %s: mode %o (present %v), want %o", name, got, ok, mode)
		}
	}
	if !strings.HasPrefix(string(layerFiles["etc/passwd"]), "root:x:0:0:") {
		t.Errorf("/etc/passwd = %q", layerFiles["etc/passwd"])
	}

	got, err := readArchiveIndex(first)
	if err != nil || len(got) != 1 || got[0] != (archivedImage{Ref: ref, Digest: digest}) {
		t.Errorf("readArchiveIndex = %+v, %v", got, err)
	}
}

func TestImageArchiveRefusesShortReferences(t *testing.T) {
	for _, ref := range []string{"kube-apiserver:v1.37.2", "registry.k8s.io/pause", "registry.k8s.io/pause@sha256:" + strings.Repeat("0", 64)} {
		if _, err := writeImageArchive(filepath.Join(t.TempDir(), "x.tar"), imageSpec{Ref: ref, Files: baseFiles()}); err == nil {
			t.Errorf("%s: accepted", ref)
		}
	}
}

func TestLayerTar(t *testing.T) {
	if _, err := layerTar([]layerFile{{Path: "/a", Data: []byte("1")}, {Path: "a", Data: []byte("2")}}); err == nil {
		t.Error("a path listed twice was accepted")
	}
	raw, err := layerTar([]layerFile{{Path: "/usr/sbin/iptables", Link: "xtables-nft-multi"}, {Path: "/usr/sbin/xtables-nft-multi", Mode: 0o755, Data: []byte("x")}})
	if err != nil {
		t.Fatal(err)
	}
	hdrs, _ := untar(t, bytes.NewReader(raw))
	var got []string
	for _, h := range hdrs {
		got = append(got, h.Name+">"+h.Linkname)
	}
	want := []string{"usr/>", "usr/sbin/>", "usr/sbin/iptables>xtables-nft-multi", "usr/sbin/xtables-nft-multi>"}
	if !slices.Equal(got, want) {
		t.Errorf("entries %v, want %v", got, want)
	}
}

// The tags are exactly what `kubeadm config images list` prints, but etcd
// runs the inventory's version.
func TestPlanImages(t *testing.T) {
	out := `registry.k8s.io/kube-apiserver:v1.37.2
registry.k8s.io/kube-controller-manager:v1.37.2
registry.k8s.io/kube-scheduler:v1.37.2
registry.k8s.io/kube-proxy:v1.37.2
registry.k8s.io/coredns/coredns:v1.14.6
registry.k8s.io/pause:3.10.2
registry.k8s.io/etcd:3.7.0-0
`
	plan, err := planImages(parseImageList(out), "3.6.16")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range plan {
		file, err := imageFileName(p.ref)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p.name+" "+p.ref+" "+file)
	}
	want := []string{
		"kube-apiserver registry.k8s.io/kube-apiserver:v1.37.2 kube-apiserver_v1.37.2.tar",
		"kube-controller-manager registry.k8s.io/kube-controller-manager:v1.37.2 kube-controller-manager_v1.37.2.tar",
		"kube-scheduler registry.k8s.io/kube-scheduler:v1.37.2 kube-scheduler_v1.37.2.tar",
		"kube-proxy registry.k8s.io/kube-proxy:v1.37.2 kube-proxy_v1.37.2.tar",
		"coredns registry.k8s.io/coredns/coredns:v1.14.6 coredns_v1.14.6.tar",
		"pause registry.k8s.io/pause:3.10.2 pause_3.10.2.tar",
		"etcd registry.k8s.io/etcd:3.6.16-0 etcd_3.6.16-0.tar",
	}
	if !slices.Equal(got, want) {
		t.Errorf("plan\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, err := planImages([]string{"registry.k8s.io/something-new:v1"}, "3.6.16"); err == nil {
		t.Error("an image kprov cannot build was accepted")
	}
	if _, err := planImages(parseImageList("W1201 warning: no images\n"), "3.6.16"); err == nil {
		t.Error("an empty list was accepted")
	}
}

func TestCoreDNSMain(t *testing.T) {
	src := string(coreDNSMain(coreDNSPlugins))
	for _, p := range []string{"errors", "health", "ready", "kubernetes", "metrics", "forward", "cache", "loop", "reload", "loadbalance"} {
		if !strings.Contains(src, `_ "github.com/coredns/coredns/plugin/`+p+`"`) {
			t.Errorf("CoreDNS main lacks plugin %s (kubeadm's Corefile uses it)", p)
		}
	}
	if !strings.Contains(src, "coremain.Run()") {
		t.Error("CoreDNS main does not run coremain")
	}
}

func TestRootFSResolve(t *testing.T) {
	root := t.TempDir()
	mk := func(p string) {
		if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ln := func(target, p string) {
		if err := os.Symlink(target, filepath.Join(root, p)); err != nil {
			t.Fatal(err)
		}
	}
	mk("usr/sbin")
	mk("usr/lib/x86_64-linux-gnu")
	mk("etc/alternatives")
	ln("usr/lib", "lib")
	ln("/usr/sbin/iptables-nft", "etc/alternatives/iptables")
	ln("/etc/alternatives/iptables", "usr/sbin/iptables")
	ln("xtables-nft-multi", "usr/sbin/iptables-nft")
	ln("../../../etc/alternatives/iptables", "usr/lib/x86_64-linux-gnu/loop")
	os.WriteFile(filepath.Join(root, "usr/sbin/xtables-nft-multi"), nil, 0o755)
	r := rootFS{dir: root}
	for p, want := range map[string]string{
		"/usr/sbin/iptables":                "/usr/sbin/xtables-nft-multi",
		"/lib/x86_64-linux-gnu":             "/usr/lib/x86_64-linux-gnu",
		"/lib/x86_64-linux-gnu/loop":        "/usr/sbin/xtables-nft-multi",
		"/usr/sbin/../../usr/sbin/iptables": "/usr/sbin/xtables-nft-multi",
	} {
		if got, err := r.resolve(p); err != nil || got != want {
			t.Errorf("resolve(%s) = %s, %v; want %s", p, got, err, want)
		}
	}
	ln("/etc/cycle", "etc/cycle")
	if _, err := r.resolve("/etc/cycle"); err == nil {
		t.Error("a symlink cycle resolved")
	}
	if _, err := r.resolve("/usr/sbin/missing"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// kube-proxy's image gets the iptables commands as links to the binary
// they resolve to in the root (through Debian's alternatives), and every
// library the binaries and modules load, found as the loader would.
func TestKubeProxyFiles(t *testing.T) {
	// A dynamically linked program of this machine stands in for
	// xtables-nft-multi and conntrack; its libraries are copied into a
	// merged-/usr root like Debian's.
	host, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true command")
	}
	interp, needed, err := elfDeps(host)
	if err != nil || interp == "" || len(needed) == 0 {
		t.Skipf("%s is not a dynamically linked ELF program (%v)", host, err)
	}
	root := t.TempDir()
	copyFile := func(src, dst string, mode os.FileMode) {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(root, dst)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
	}
	ln := func(target, p string) {
		os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755)
		if err := os.Symlink(target, filepath.Join(root, p)); err != nil {
			t.Fatal(err)
		}
	}
	hostRoot := rootFS{dir: "/"}
	libDir := "/usr/lib/x86_64-linux-gnu"
	for _, lib := range needed {
		_, resolved, err := hostRoot.findLibrary(lib)
		if err != nil {
			t.Skipf("%s: %v", lib, err)
		}
		copyFile(resolved, libDir+"/"+lib+".real", 0o644)
		ln(lib+".real", libDir+"/"+lib)
	}
	copyFile(host, "/usr/sbin/xtables-nft-multi", 0o755)
	copyFile(host, "/usr/sbin/conntrack", 0o755)
	copyFile(host, libDir+"/xtables/libxt_mark.so", 0o644)
	interpResolved, err := hostRoot.resolve(interp)
	if err != nil {
		t.Fatal(err)
	}
	copyFile(interpResolved, libDir+"/"+filepath.Base(interp), 0o755)
	ln("usr/lib", "lib")
	ln("usr/lib64", "lib64")
	ln("/lib/x86_64-linux-gnu/"+filepath.Base(interp), "usr"+interp)
	for _, cmd := range kubeProxyCommands {
		if cmd != "conntrack" {
			ln("/etc/alternatives/"+cmd, "usr/sbin/"+cmd)
			ln("/usr/sbin/xtables-nft-multi", "etc/alternatives/"+cmd)
		}
	}
	ln("xtables-nft-multi", "usr/sbin/iptables-nft")

	files, err := kubeProxyFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]layerFile{}
	for _, f := range files {
		got[f.Path] = f
	}
	for _, cmd := range []string{"iptables", "ip6tables-restore", "iptables-nft"} {
		if f := got["/usr/sbin/"+cmd]; f.Link != "xtables-nft-multi" {
			t.Errorf("/usr/sbin/%s = %+v, want a link to xtables-nft-multi", cmd, f)
		}
	}
	if _, ok := got["/usr/sbin/iptables-legacy"]; ok {
		t.Error("a variant the root lacks was added")
	}
	for _, p := range []string{"/usr/sbin/xtables-nft-multi", "/usr/sbin/conntrack", libDir + "/xtables/libxt_mark.so", interp} {
		if f, ok := got[p]; !ok || f.Source == "" {
			t.Errorf("%s missing or not a file: %+v", p, f)
		}
	}
	for _, lib := range needed {
		f, ok := got[libDir+"/"+lib]
		if !ok || !strings.HasSuffix(f.Source, lib+".real") {
			t.Errorf("library %s: %+v (present %v), want a copy of %s.real", lib, f, ok, lib)
		}
	}
	if _, err := kubeProxyFiles(t.TempDir()); err == nil {
		t.Error("a root without iptables was accepted")
	}
	if findIptablesRoot([]string{t.TempDir(), root}) != root {
		t.Error("findIptablesRoot did not pick the root with iptables")
	}
}
