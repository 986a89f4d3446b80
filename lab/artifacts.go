package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/charmbracelet/log"

	"github.com/kprov/kprov/internal/atomicfile"
	"github.com/kprov/kprov/internal/filehash"
)

// ManifestFile lists every cached artifact with its SHA-256, in sha256sum's format.
const ManifestFile = "SHA256SUMS"

// Versions selects the releases BuildArtifacts builds.
type Versions struct {
	// Etcd is an etcd release such as "3.6.16".
	Etcd string
	// Kubernetes is a Kubernetes release such as "1.37.2".
	Kubernetes string
	// Containerd is a containerd release such as "2.4.2".
	Containerd string
	// CNIPlugins is a release of the CNI plugins such as "1.10.0".
	CNIPlugins string
	// IptablesRoot is the Debian root filesystem whose iptables and
	// conntrack go into the kube-proxy image; empty means a cached lab root
	// filesystem that has them (in rootfs/ beside the artifact cache or in
	// DefaultCacheDir), the current recipe's first, then the newest.
	IptablesRoot string
}

// Default releases of the runtime artifacts.
const (
	DefaultContainerdVersion = "2.4.2"
	DefaultCNIPluginsVersion = "1.10.0"
)

// Artifact is one built file in the cache: a binary, the CNI plugins
// archive, or an image archive.
type Artifact struct {
	Name   string // etcd, ..., kubeadm, containerd, cni-plugins, kprov-apiproxy; an image archive's image reference
	Path   string // absolute
	SHA256 string // hex
	Image  bool   // an image archive (OCI image-layout tar), listed in the inventory's images
}

// Artifacts are what kprov pushes to lab hosts instead of letting them
// download: binaries, the CNI plugins, and the images kubeadm needs.
type Artifacts struct {
	Etcd, Etcdctl, Etcdutl, Kubeadm, Kubelet, Kubectl Artifact
	Containerd, Ctr, ContainerdShim                   Artifact
	CNIPlugins                                        Artifact
	// APIProxy is kprov-apiproxy, built from kprov's own source (package
	// apiproxy), the load balancer every node reaches the API servers through.
	APIProxy Artifact
	// The control-plane commands, which reach hosts only inside the images.
	KubeAPIServer, KubeControllerManager, KubeScheduler, KubeProxy Artifact
	Images                                                         Images
}

// Images are the image archives, one per image kubeadm lists, and the
// network check workload's.
type Images struct {
	KubeAPIServer, KubeControllerManager, KubeScheduler, KubeProxy, Pause, Etcd, CoreDNS Artifact
	Netcheck                                                                             Artifact
}

// All lists the images in a fixed order, leaving out any not built (a
// kube-proxy image without a root filesystem to take iptables from).
func (i Images) All() []Artifact {
	return present(i.KubeAPIServer, i.KubeControllerManager, i.KubeScheduler, i.KubeProxy, i.Pause, i.Etcd, i.CoreDNS, i.Netcheck)
}

// All lists the artifacts in a fixed order: what the inventory lists, the
// control-plane binaries, then the images.
func (a Artifacts) All() []Artifact {
	out := present(a.Etcd, a.Etcdctl, a.Etcdutl, a.Kubeadm, a.Kubelet, a.Kubectl,
		a.Containerd, a.Ctr, a.ContainerdShim, a.CNIPlugins, a.APIProxy,
		a.KubeAPIServer, a.KubeControllerManager, a.KubeScheduler, a.KubeProxy)
	return append(out, a.Images.All()...)
}

func present(arts ...Artifact) []Artifact {
	var out []Artifact
	for _, a := range arts {
		if a.Path != "" {
			out = append(out, a)
		}
	}
	return out
}

// DefaultArtifactsDir is the artifact cache `kprov lab artifacts` and the
// end-to-end tests share, so a machine builds each binary once.
const DefaultArtifactsDir = DefaultCacheDir + "/artifacts"

// ErrToolchain is wrapped by every build error that comes from a missing go
// command or from the module proxy or network failing the go command, as
// opposed to a build that is wrong. Tests may skip on it and on nothing else.
var ErrToolchain = errors.New("go toolchain or module proxy unavailable")

// unreachable matches what the go command says when the module proxy or the
// network fails it. A proxy answers 403, 404 or 410 for a module version it
// will not serve (the module proxy refuses some k8s.io staging releases).
var unreachable = regexp.MustCompile(`reading https?://|dial tcp|no such host|connection refused|i/o timeout|TLS handshake timeout|(403|404|410|5\d\d) [A-Z][a-z]`)

// goError marks err with ErrToolchain when msg, what the go command said, is
// a proxy or network failure.
func goError(err error, msg string) error {
	if unreachable.MatchString(msg) {
		return fmt.Errorf("%w: %w", ErrToolchain, err)
	}
	return err
}

// runGo runs the go command in dir with extra environment variables; a
// failure the proxy or network caused wraps ErrToolchain. GOWORK=off keeps a
// go.work around the caller from leaking into the throwaway build modules.
func runGo(ctx context.Context, dir string, env []string, args ...string) ([]byte, error) {
	out, err := runCommand(ctx, dir, append([]string{"GOWORK=off"}, env...), "go", args...)
	var ce *CommandError
	if errors.As(err, &ce) {
		return out, goError(err, ce.Stderr)
	}
	return out, err
}

// versionFormat is a release version such as 1.37.2 or v3.6.0-rc.1. It
// becomes part of a path in the cache, so nothing else is accepted.
var versionFormat = regexp.MustCompile(`^v?\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?$`)

// vVersion checks a release version and returns it with a leading v.
func vVersion(what, version string) (string, error) {
	if !versionFormat.MatchString(version) {
		return "", fmt.Errorf("%s version %q: want MAJOR.MINOR.PATCH", what, version)
	}
	return "v" + strings.TrimPrefix(version, "v"), nil
}

// withDefaults fills in the default release of every version left empty.
func (v Versions) withDefaults() Versions {
	for _, f := range []struct {
		p   *string
		def string
	}{{&v.Etcd, DefaultEtcdVersion}, {&v.Kubernetes, DefaultKubernetesVersion}, {&v.Containerd, DefaultContainerdVersion}, {&v.CNIPlugins, DefaultCNIPluginsVersion}} {
		if *f.p == "" {
			*f.p = f.def
		}
	}
	return v
}

// artifactCache is an open, locked artifact directory and its manifest.
type artifactCache struct {
	dir      string // absolute
	manifest map[string]string
	unlock   func()
}

// openArtifactCache creates and locks dir and reads its manifest. The lock
// serialises builders (a test run and `kprov lab artifacts`, say), so two
// never build the same binary at once.
func openArtifactCache(dir string) (*artifactCache, error) {
	if _, err := exec.LookPath("go"); err != nil {
		return nil, fmt.Errorf("the go command is needed to build artifacts (install Go): %w: %w", ErrToolchain, err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("artifact cache: %w", err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("artifact cache: %w", err)
	}
	unlock, err := lockFile(filepath.Join(abs, ".lock"))
	if err != nil {
		return nil, fmt.Errorf("artifact cache: %w", err)
	}
	manifest, err := readManifest(filepath.Join(abs, ManifestFile))
	if err != nil {
		unlock()
		return nil, err
	}
	return &artifactCache{dir: abs, manifest: manifest, unlock: unlock}, nil
}

// ensure fills in the checksums of arts. Those whose file is missing or no
// longer matches the manifest are passed to build, in arts' order; the
// others are left as they are. What build made is recorded in the manifest
// on disk at once, so a later failure does not cost this build.
func (c *artifactCache) ensure(arts []*Artifact, build func(missing []*Artifact) error) error {
	var missing []*Artifact
	for _, art := range arts {
		if !c.cached(art) {
			missing = append(missing, art)
			continue
		}
		art.SHA256 = c.manifest[c.rel(art)]
	}
	if len(missing) == 0 {
		return nil
	}
	if err := build(missing); err != nil {
		return err
	}
	for _, art := range missing {
		sum, err := fileSHA256(art.Path)
		if err != nil {
			return fmt.Errorf("%s: %w", art.Name, err)
		}
		art.SHA256 = sum
		c.manifest[c.rel(art)] = sum
	}
	// Entries of artifacts this call did not touch are kept.
	return writeManifest(filepath.Join(c.dir, ManifestFile), c.manifest)
}

// cached reports whether art's file matches the manifest.
func (c *artifactCache) cached(art *Artifact) bool {
	sum, err := fileSHA256(art.Path)
	return err == nil && c.manifest[c.rel(art)] == sum
}

func (c *artifactCache) rel(art *Artifact) string {
	rel, _ := filepath.Rel(c.dir, art.Path)
	return filepath.ToSlash(rel)
}

// BuildArtifacts builds, from the Go module proxy, everything a lab needs to
// run Kubernetes without downloading anything: etcd, etcdctl and etcdutl;
// the seven Kubernetes commands; containerd, ctr and its runc shim; the CNI
// plugins as cni-plugins.tgz; kprov-apiproxy from kprov's own source; and
// the images kubeadm lists for the
// Kubernetes version as OCI image-layout archives (see cache layout in
// docs/lab.md). It records checksums in dir/SHA256SUMS; a file that matches
// its recorded checksum is not built again. The binaries are static
// (CGO_ENABLED=0), so they run on any lab machine, as an air-gapped site's
// would. Without a root filesystem to take iptables from, the kube-proxy
// image is left out with a warning. An error the module proxy or the
// network caused wraps ErrToolchain.
func BuildArtifacts(ctx context.Context, dir string, v Versions, logger *log.Logger) (Artifacts, error) {
	v = v.withDefaults()
	etcdV, err := vVersion("etcd", v.Etcd)
	if err != nil {
		return Artifacts{}, err
	}
	if _, err := kubernetesVersion(v.Kubernetes); err != nil {
		return Artifacts{}, err
	}
	containerdV, err := vVersion("containerd", v.Containerd)
	if err != nil {
		return Artifacts{}, err
	}
	cniV, err := vVersion("CNI plugins", v.CNIPlugins)
	if err != nil {
		return Artifacts{}, err
	}
	if logger == nil {
		logger = log.New(io.Discard)
	}
	c, err := openArtifactCache(dir)
	if err != nil {
		return Artifacts{}, err
	}
	defer c.unlock()

	var a Artifacts
	etcdDir := filepath.Join(c.dir, "etcd-"+etcdV)
	a.Etcd = Artifact{Name: "etcd", Path: filepath.Join(etcdDir, "etcd")}
	a.Etcdctl = Artifact{Name: "etcdctl", Path: filepath.Join(etcdDir, "etcdctl")}
	a.Etcdutl = Artifact{Name: "etcdutl", Path: filepath.Join(etcdDir, "etcdutl")}
	if err := c.ensure([]*Artifact{&a.Etcd, &a.Etcdctl, &a.Etcdutl}, func([]*Artifact) error {
		return buildInModule(ctx, etcdBuild(etcdV), etcdDir, logger)
	}); err != nil {
		return Artifacts{}, err
	}

	k8s := []*Artifact{&a.Kubeadm, &a.Kubelet, &a.Kubectl, &a.KubeAPIServer, &a.KubeControllerManager, &a.KubeScheduler, &a.KubeProxy}
	built, err := c.kubernetes(ctx, v.Kubernetes, kubernetesCommands, logger)
	if err != nil {
		return Artifacts{}, err
	}
	for i, art := range built {
		*k8s[i] = art
	}

	cdDir := filepath.Join(c.dir, "containerd-"+containerdV)
	a.Containerd = Artifact{Name: "containerd", Path: filepath.Join(cdDir, "containerd")}
	a.Ctr = Artifact{Name: "ctr", Path: filepath.Join(cdDir, "ctr")}
	a.ContainerdShim = Artifact{Name: "containerd-shim-runc-v2", Path: filepath.Join(cdDir, "containerd-shim-runc-v2")}
	if err := c.ensure([]*Artifact{&a.Containerd, &a.Ctr, &a.ContainerdShim}, func(missing []*Artifact) error {
		return buildInModule(ctx, containerdBuild(containerdV, names(missing)), cdDir, logger)
	}); err != nil {
		return Artifacts{}, err
	}

	cniDir := filepath.Join(c.dir, "cni-plugins-"+cniV)
	a.CNIPlugins = Artifact{Name: "cni-plugins", Path: filepath.Join(cniDir, cniArchive)}
	if err := c.ensure([]*Artifact{&a.CNIPlugins}, func([]*Artifact) error {
		return buildCNIPlugins(ctx, cniDir, cniV, logger)
	}); err != nil {
		return Artifacts{}, err
	}

	proxyRel, proxyBuild, err := apiProxyBuildOf()
	if err != nil {
		return Artifacts{}, err
	}
	a.APIProxy = Artifact{Name: apiProxyName, Path: filepath.Join(c.dir, filepath.FromSlash(proxyRel))}
	if err := c.ensure([]*Artifact{&a.APIProxy}, func([]*Artifact) error {
		return buildInModule(ctx, proxyBuild, filepath.Dir(a.APIProxy.Path), logger)
	}); err != nil {
		return Artifacts{}, err
	}

	if err := c.images(ctx, &a, v, logger); err != nil {
		return Artifacts{}, err
	}
	return a, nil
}

// names returns the artifacts' names.
func names(arts []*Artifact) []string {
	out := make([]string, len(arts))
	for i, a := range arts {
		out[i] = a.Name
	}
	return out
}

// BuildKubeadm builds kubeadm of a Kubernetes release (default
// DefaultKubernetesVersion) into dir/kubernetes-vVERSION/kubeadm, or finds it
// there, exactly as BuildArtifacts does and in the same cache and manifest,
// for a caller that needs no etcd. An error the module proxy or the network
// caused wraps ErrToolchain.
func BuildKubeadm(ctx context.Context, dir, version string, logger *log.Logger) (Artifact, error) {
	if version == "" {
		version = DefaultKubernetesVersion
	}
	if _, err := kubernetesVersion(version); err != nil {
		return Artifact{}, err
	}
	if logger == nil {
		logger = log.New(io.Discard)
	}
	c, err := openArtifactCache(dir)
	if err != nil {
		return Artifact{}, err
	}
	defer c.unlock()
	arts, err := c.kubernetes(ctx, version, []string{"kubeadm"}, logger)
	if err != nil {
		return Artifact{}, err
	}
	return arts[0], nil
}

// BuildEtcd builds etcd, etcdctl and etcdutl of an etcd release into
// dir/etcd-vVERSION, or finds them there, exactly as BuildArtifacts does and
// in the same cache and manifest, and nothing else. A test that needs a
// second etcd release (a rolling upgrade from it) uses it rather than
// BuildArtifacts with another etcd version: that would also add the
// release's etcd image to the Kubernetes version's image archives, which
// CachedArtifacts then offers every lab. An error the module proxy or the
// network caused wraps ErrToolchain.
func BuildEtcd(ctx context.Context, dir, version string, logger *log.Logger) ([]Artifact, error) {
	etcdV, err := vVersion("etcd", version)
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = log.New(io.Discard)
	}
	c, err := openArtifactCache(dir)
	if err != nil {
		return nil, err
	}
	defer c.unlock()
	etcdDir := filepath.Join(c.dir, "etcd-"+etcdV)
	arts := []Artifact{
		{Name: "etcd", Path: filepath.Join(etcdDir, "etcd")},
		{Name: "etcdctl", Path: filepath.Join(etcdDir, "etcdctl")},
		{Name: "etcdutl", Path: filepath.Join(etcdDir, "etcdutl")},
	}
	if err := c.ensure([]*Artifact{&arts[0], &arts[1], &arts[2]}, func([]*Artifact) error {
		return buildInModule(ctx, etcdBuild(etcdV), etcdDir, logger)
	}); err != nil {
		return nil, err
	}
	return arts, nil
}

// kubernetesCommands are the Kubernetes commands BuildArtifacts builds, in
// the order of Artifacts' fields.
var kubernetesCommands = []string{"kubeadm", "kubelet", "kubectl", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"}

// kubernetesVersion checks a Kubernetes release version and returns it with a leading v.
func kubernetesVersion(version string) (string, error) {
	if !versionFormat.MatchString(version) || !strings.HasPrefix(strings.TrimPrefix(version, "v"), "1.") {
		return "", fmt.Errorf("kubernetes version %q: want 1.MINOR.PATCH", version)
	}
	return "v" + strings.TrimPrefix(version, "v"), nil
}

// kubernetes ensures the named commands of a Kubernetes release are in the
// cache, building the missing ones in one go build (they share most of
// their packages, so one build compiles them once and links each).
func (c *artifactCache) kubernetes(ctx context.Context, version string, commands []string, logger *log.Logger) ([]Artifact, error) {
	k8sV, err := kubernetesVersion(version)
	if err != nil {
		return nil, err
	}
	k8sDir := filepath.Join(c.dir, "kubernetes-"+k8sV)
	arts := make([]Artifact, len(commands))
	ptrs := make([]*Artifact, len(commands))
	for i, n := range commands {
		arts[i] = Artifact{Name: n, Path: filepath.Join(k8sDir, n)}
		ptrs[i] = &arts[i]
	}
	if err := c.ensure(ptrs, func(missing []*Artifact) error {
		b, err := kubernetesBuild(ctx, k8sV, names(missing))
		if err != nil {
			return err
		}
		return buildInModule(ctx, b, k8sDir, logger)
	}); err != nil {
		return nil, err
	}
	return arts, nil
}

// CachedArtifacts returns the artifacts of versions v that dir already holds
// with their recorded checksum, building nothing: the binaries and the CNI
// plugins the inventory names, kprov-apiproxy of this kprov's source, then every image archive of the Kubernetes
// version; one missing from the cache is left out. It is how `kprov lab up`
// finds what to write into the lab's artifacts block.
func CachedArtifacts(dir string, v Versions) ([]Artifact, error) {
	v = v.withDefaults()
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("artifact cache: %w", err)
	}
	manifest, err := readManifest(filepath.Join(abs, ManifestFile))
	if err != nil {
		return nil, err
	}
	// matches reports whether a file still matches its recorded checksum. A
	// file changed since it was recorded is not offered: apply would refuse
	// it anyway, naming the file.
	matches := func(rel string) (string, bool) {
		want, ok := manifest[rel]
		if !ok {
			return "", false
		}
		sum, err := fileSHA256(filepath.Join(abs, rel))
		return want, err == nil && sum == want
	}
	proxyRel, _, err := apiProxyBuildOf()
	if err != nil {
		return nil, err
	}
	etcdDir := "etcd-v" + strings.TrimPrefix(v.Etcd, "v")
	k8sV := "v" + strings.TrimPrefix(v.Kubernetes, "v")
	cdDir := "containerd-v" + strings.TrimPrefix(v.Containerd, "v")
	var out []Artifact
	for _, rel := range []string{
		etcdDir + "/etcd", etcdDir + "/etcdctl", etcdDir + "/etcdutl",
		"kubernetes-" + k8sV + "/kubeadm", "kubernetes-" + k8sV + "/kubelet", "kubernetes-" + k8sV + "/kubectl",
		cdDir + "/containerd", cdDir + "/ctr", cdDir + "/containerd-shim-runc-v2",
		"cni-plugins-v" + strings.TrimPrefix(v.CNIPlugins, "v") + "/" + cniArchive,
		proxyRel,
	} {
		sum, ok := matches(rel)
		if !ok {
			continue
		}
		name := path.Base(rel)
		if name == cniArchive {
			name = "cni-plugins"
		}
		out = append(out, Artifact{Name: name, Path: filepath.Join(abs, rel), SHA256: sum})
	}
	var images []string
	for rel := range manifest {
		if strings.HasPrefix(rel, "images-"+k8sV+"/") && strings.HasSuffix(rel, ".tar") {
			images = append(images, rel)
		}
	}
	slices.Sort(images)
	for _, rel := range images {
		sum, ok := matches(rel)
		if !ok {
			continue
		}
		p := filepath.Join(abs, rel)
		index, err := readArchiveIndex(p)
		if err != nil || len(index) == 0 {
			continue
		}
		out = append(out, Artifact{Name: index[0].Ref, Path: p, SHA256: sum, Image: true})
	}
	return out, nil
}

// goBuild is one build in a throwaway module: `go get` of the modules,
// then `go build` of the packages, every binary named after its package's
// last path element (as `go build -o DIR/` names them) unless Binaries
// names them otherwise.
type goBuild struct {
	what    string            // what to call the build in logs and errors
	gomod   string            // go.mod directives after the module line (replaces)
	gets    []string          // go get arguments, module@version
	files   map[string][]byte // source files of the throwaway module, by slash path
	pkgs    []string          // import paths of the main packages
	tags    []string          // build tags
	ldflags string            // default "-s -w"
	// binaries names each package's binary when the last path element is
	// not the name (go.etcd.io/etcd/server/v3 is etcd); such builds run
	// one go build per package.
	binaries map[string]string
}

// commands returns the go command lines (without "go") that build every
// binary into outDir: one `go build -o outDir/` for all packages unless a
// binary needs its own name.
func (b goBuild) commands(outDir string) [][]string {
	ldflags := b.ldflags
	if ldflags == "" {
		ldflags = "-s -w"
	}
	flags := []string{"build", "-trimpath"}
	if len(b.tags) > 0 {
		flags = append(flags, "-tags", strings.Join(b.tags, ","))
	}
	flags = append(flags, "-ldflags", ldflags)
	if len(b.binaries) == 0 {
		args := append(slices.Clone(flags), "-o", outDir+string(filepath.Separator))
		return [][]string{append(args, b.pkgs...)}
	}
	var out [][]string
	for _, pkg := range b.pkgs {
		args := append(slices.Clone(flags), "-o", filepath.Join(outDir, b.binaryName(pkg)), pkg)
		out = append(out, args)
	}
	return out
}

// binaryName is the file a package's binary is written to.
func (b goBuild) binaryName(pkg string) string {
	if n, ok := b.binaries[pkg]; ok {
		return n
	}
	return path.Base(pkg)
}

// etcdBuild builds the three etcd binaries in a module that requires the
// server, etcdctl and etcdutl modules at the same version.
func etcdBuild(version string) goBuild {
	b := goBuild{what: "etcd " + version, binaries: map[string]string{}}
	for name, mod := range map[string]string{"etcd": "go.etcd.io/etcd/server/v3", "etcdctl": "go.etcd.io/etcd/etcdctl/v3", "etcdutl": "go.etcd.io/etcd/etcdutl/v3"} {
		b.gets = append(b.gets, mod+"@"+version)
		b.pkgs = append(b.pkgs, mod)
		b.binaries[mod] = name
	}
	slices.Sort(b.gets)
	slices.Sort(b.pkgs)
	return b
}

// kubernetesBuild builds the named commands (kubeadm, kubelet, ...) of
// k8s.io/kubernetes in one go build. That module requires its staging
// modules (k8s.io/api, ...) at v0.0.0 and replaces them with local
// directories that a dependent module cannot see, so the build module
// replaces each with its published v0.MINOR.PATCH release instead.
func kubernetesBuild(ctx context.Context, version string, commands []string) (goBuild, error) {
	what := strings.Join(commands, ", ") + " " + version
	modPath, err := downloadGoMod(ctx, "k8s.io/kubernetes@"+version)
	if err != nil {
		return goBuild{}, fmt.Errorf("%s: %w", what, err)
	}
	data, err := os.ReadFile(modPath)
	if err != nil {
		return goBuild{}, fmt.Errorf("%s: %w", what, err)
	}
	return kubernetesBuildFromGoMod(version, commands, string(data))
}

// kubernetesBuildFromGoMod is kubernetesBuild given k8s.io/kubernetes's go.mod.
func kubernetesBuildFromGoMod(version string, commands []string, gomod string) (goBuild, error) {
	what := strings.Join(commands, ", ") + " " + version
	staging := StagingModules(gomod)
	if len(staging) == 0 {
		return goBuild{}, fmt.Errorf("%s: no staging modules (v0.0.0 requirements) in k8s.io/kubernetes's go.mod", what)
	}
	stagingVersion := "v0." + strings.TrimPrefix(version, "v1.")
	var replaces strings.Builder
	for _, m := range staging {
		fmt.Fprintf(&replaces, "replace %s => %s %s\n", m, m, stagingVersion)
	}
	major, minor, _ := strings.Cut(strings.TrimPrefix(version, "v"), ".")
	minor, _, _ = strings.Cut(minor, ".")
	b := goBuild{
		what:  what,
		gomod: replaces.String(),
		// kubeadm refuses to work without knowing its own version, and the
		// other commands report it; the release build sets these.
		ldflags: fmt.Sprintf("-s -w -X k8s.io/component-base/version.gitVersion=%s -X k8s.io/component-base/version.gitMajor=%s -X k8s.io/component-base/version.gitMinor=%s -X k8s.io/component-base/version.gitTreeState=clean",
			version, major, minor),
	}
	for _, n := range commands {
		b.gets = append(b.gets, "k8s.io/kubernetes/cmd/"+n+"@"+version)
		b.pkgs = append(b.pkgs, "k8s.io/kubernetes/cmd/"+n)
	}
	return b, nil
}

// containerdBuild builds the named containerd commands (containerd, ctr,
// containerd-shim-runc-v2) in one go build, without the snapshotters that
// need cgo or kernel features lab machines lack.
func containerdBuild(version string, commands []string) goBuild {
	b := goBuild{
		what:    "containerd " + version,
		gets:    []string{"github.com/containerd/containerd/v2@" + version},
		tags:    []string{"no_btrfs", "no_devmapper", "no_zfs"},
		ldflags: "-s -w -X github.com/containerd/containerd/v2/version.Version=" + version,
	}
	for _, n := range commands {
		b.pkgs = append(b.pkgs, "github.com/containerd/containerd/v2/cmd/"+n)
	}
	return b
}

// StagingModules returns the modules a k8s.io/kubernetes go.mod requires at
// v0.0.0: the staging modules published separately as k8s.io/NAME v0.MINOR.PATCH.
func StagingModules(gomod string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(gomod))
	inRequire := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "require (":
			inRequire = true
			continue
		case line == ")":
			inRequire = false
			continue
		case strings.HasPrefix(line, "require "):
			line = strings.TrimPrefix(line, "require ")
		case !inRequire:
			continue
		}
		f := strings.Fields(line)
		if len(f) >= 2 && f[1] == "v0.0.0" && strings.HasPrefix(f[0], "k8s.io/") && !slices.Contains(out, f[0]) {
			out = append(out, f[0])
		}
	}
	return out
}

// downloadGoMod fetches a module's go.mod through the module proxy and returns its path in the module cache.
func downloadGoMod(ctx context.Context, modVersion string) (string, error) {
	tmp, err := os.MkdirTemp("", "kprov-gomod-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	// `go mod download` outside a module needs no go.mod, but GOFLAGS=-mod=mod keeps it from consulting one.
	out, runErr := runGo(ctx, tmp, []string{"GOFLAGS=-mod=mod"}, "mod", "download", "-json", modVersion)
	// On failure the go command still prints the JSON, with the reason in Error and often nothing on stderr.
	var info struct{ GoMod, Error string }
	if err := json.Unmarshal(out, &info); err != nil {
		if runErr != nil {
			return "", runErr
		}
		return "", fmt.Errorf("go mod download %s: %w", modVersion, err)
	}
	if info.Error != "" {
		return "", goError(fmt.Errorf("go mod download %s: %s", modVersion, info.Error), info.Error)
	}
	if runErr != nil {
		return "", runErr
	}
	if info.GoMod == "" {
		return "", fmt.Errorf("go mod download %s: no go.mod reported", modVersion)
	}
	return info.GoMod, nil
}

// buildModule is the throwaway module's path; a package of it (pause,
// coredns) is built as kprov.local/artifacts/NAME.
const buildModule = "kprov.local/artifacts"

// buildInModule creates a temporary module, adds the requirements with go
// get, builds every binary into a temporary directory inside outDir, and
// then renames each into place, so outDir never holds half a binary.
func buildInModule(ctx context.Context, b goBuild, outDir string, logger *log.Logger) error {
	tmp, err := os.MkdirTemp("", "kprov-build-")
	if err != nil {
		return fmt.Errorf("%s: %w", b.what, err)
	}
	defer os.RemoveAll(tmp)
	gomod := "module " + buildModule + "\n\ngo 1.26\n\n" + b.gomod
	if err := os.WriteFile(filepath.Join(tmp, "go.mod"), []byte(gomod), 0o644); err != nil {
		return fmt.Errorf("%s: %w", b.what, err)
	}
	for rel, data := range b.files {
		p := filepath.Join(tmp, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("%s: %w", b.what, err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return fmt.Errorf("%s: %w", b.what, err)
		}
	}
	logger.Info("building from the Go module proxy (minutes, once)", "what", b.what)
	start := time.Now()
	env := []string{"CGO_ENABLED=0", "GOFLAGS=-mod=mod"}
	if len(b.gets) > 0 {
		if _, err := runGo(ctx, tmp, env, append([]string{"get"}, b.gets...)...); err != nil {
			return fmt.Errorf("%s: %w", b.what, err)
		}
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return fmt.Errorf("%s: %w", b.what, err)
	}
	staging, err := os.MkdirTemp(outDir, ".build-")
	if err != nil {
		return fmt.Errorf("%s: %w", b.what, err)
	}
	defer os.RemoveAll(staging)
	for _, args := range b.commands(staging) {
		if _, err := runGo(ctx, tmp, env, args...); err != nil {
			return fmt.Errorf("%s: %w", b.what, err)
		}
	}
	for _, pkg := range b.pkgs {
		name := b.binaryName(pkg)
		if err := os.Rename(filepath.Join(staging, name), filepath.Join(outDir, name)); err != nil {
			return fmt.Errorf("%s: %w", b.what, err)
		}
	}
	logger.Info("built", "what", b.what, "took", time.Since(start).Round(time.Second))
	return nil
}

// fileSHA256 returns the hex SHA-256 of a file.
func fileSHA256(path string) (string, error) { return filehash.SHA256(path) }

// readManifest reads a sha256sum-format file into path -> hex digest; a missing file is empty.
func readManifest(path string) (map[string]string, error) {
	m := map[string]string{}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read artifact manifest: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		sum, file, ok := strings.Cut(line, "  ")
		if ok && len(sum) == 64 {
			m[file] = sum
		}
	}
	return m, nil
}

// writeManifest writes path -> digest in sha256sum's format, sorted, so
// `sha256sum -c SHA256SUMS` in the cache directory verifies it.
func writeManifest(path string, m map[string]string) error {
	files := make([]string, 0, len(m))
	for f := range m {
		files = append(files, f)
	}
	slices.Sort(files)
	var b strings.Builder
	for _, f := range files {
		fmt.Fprintf(&b, "%s  %s\n", m[f], f)
	}
	return atomicfile.Write(path, []byte(b.String()), 0o644)
}
