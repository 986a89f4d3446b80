package lab

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/charmbracelet/log"

	"github.com/kprov/kprov/internal/atomicfile"
)

// ManifestFile lists every cached artifact with its SHA-256, in sha256sum's format.
const ManifestFile = "SHA256SUMS"

// Versions selects the releases BuildArtifacts builds.
type Versions struct {
	// Etcd is an etcd release such as "3.6.16".
	Etcd string
	// Kubernetes is a Kubernetes release such as "1.37.2".
	Kubernetes string
}

// Artifact is one built binary in the cache.
type Artifact struct {
	Name   string // etcd, etcdctl, etcdutl, kubeadm
	Path   string // absolute
	SHA256 string // hex
}

// Artifacts are the binaries kprov pushes to lab hosts instead of letting them download.
type Artifacts struct {
	Etcd, Etcdctl, Etcdutl, Kubeadm, Kubelet, Kubectl Artifact
}

// All lists the artifacts in a fixed order.
func (a Artifacts) All() []Artifact {
	return []Artifact{a.Etcd, a.Etcdctl, a.Etcdutl, a.Kubeadm, a.Kubelet, a.Kubectl}
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

// ensure fills in the checksums of arts, running build first unless every
// one of them is present and matches the manifest, and records them in the
// manifest on disk at once, so a later failure does not cost this build.
func (c *artifactCache) ensure(arts []*Artifact, build func() error) error {
	sums := make([]string, len(arts))
	cached := true
	for i, art := range arts {
		sum, err := fileSHA256(art.Path)
		sums[i] = sum
		if err != nil || c.manifest[c.rel(art)] != sum {
			cached = false
			break
		}
	}
	if cached {
		for i, art := range arts {
			art.SHA256 = sums[i]
		}
		return nil
	}
	if err := build(); err != nil {
		return err
	}
	for _, art := range arts {
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

func (c *artifactCache) rel(art *Artifact) string {
	rel, _ := filepath.Rel(c.dir, art.Path)
	return filepath.ToSlash(rel)
}

// BuildArtifacts builds etcd, etcdctl, etcdutl, kubeadm, kubelet and kubectl
// from the Go module proxy into dir (dir/etcd-vX/..., dir/kubernetes-vY/...) and records
// their checksums in dir/SHA256SUMS. A binary whose file matches its recorded
// checksum is not built again. The binaries are static (CGO_ENABLED=0), so
// they run on any lab machine, as an air-gapped site's would. An error the
// module proxy or the network caused wraps ErrToolchain.
func BuildArtifacts(ctx context.Context, dir string, v Versions, logger *log.Logger) (Artifacts, error) {
	if v.Etcd == "" {
		v.Etcd = DefaultEtcdVersion
	}
	if !versionFormat.MatchString(v.Etcd) {
		return Artifacts{}, fmt.Errorf("etcd version %q: want MAJOR.MINOR.PATCH", v.Etcd)
	}
	c, err := openArtifactCache(dir)
	if err != nil {
		return Artifacts{}, err
	}
	defer c.unlock()
	etcdV := "v" + strings.TrimPrefix(v.Etcd, "v")
	etcdDir := filepath.Join(c.dir, "etcd-"+etcdV)
	a := Artifacts{
		Etcd:    Artifact{Name: "etcd", Path: filepath.Join(etcdDir, "etcd")},
		Etcdctl: Artifact{Name: "etcdctl", Path: filepath.Join(etcdDir, "etcdctl")},
		Etcdutl: Artifact{Name: "etcdutl", Path: filepath.Join(etcdDir, "etcdutl")},
	}
	if err := c.ensure([]*Artifact{&a.Etcd, &a.Etcdctl, &a.Etcdutl}, func() error {
		return buildEtcd(ctx, etcdDir, etcdV, logger)
	}); err != nil {
		return Artifacts{}, err
	}
	if a.Kubeadm, err = c.kubeadm(ctx, v.Kubernetes, logger); err != nil {
		return Artifacts{}, err
	}
	// kubelet and kubectl came to the cache later than kubeadm: a cache that
	// holds kubeadm only builds these two.
	k8sDir := filepath.Dir(a.Kubeadm.Path) // dir/kubernetes-vVERSION, checked by c.kubeadm
	k8sV := strings.TrimPrefix(filepath.Base(k8sDir), "kubernetes-")
	a.Kubelet = Artifact{Name: "kubelet", Path: filepath.Join(k8sDir, "kubelet")}
	a.Kubectl = Artifact{Name: "kubectl", Path: filepath.Join(k8sDir, "kubectl")}
	if err := c.ensure([]*Artifact{&a.Kubelet, &a.Kubectl}, func() error {
		return buildKubernetes(ctx, k8sDir, k8sV, []string{"kubelet", "kubectl"}, logger)
	}); err != nil {
		return Artifacts{}, err
	}
	return a, nil
}

// BuildKubeadm builds kubeadm of a Kubernetes release (default
// DefaultKubernetesVersion) into dir/kubernetes-vVERSION/kubeadm, or finds it
// there, exactly as BuildArtifacts does and in the same cache and manifest,
// for a caller that needs no etcd. An error the module proxy or the network
// caused wraps ErrToolchain.
func BuildKubeadm(ctx context.Context, dir, version string, logger *log.Logger) (Artifact, error) {
	c, err := openArtifactCache(dir)
	if err != nil {
		return Artifact{}, err
	}
	defer c.unlock()
	return c.kubeadm(ctx, version, logger)
}

// kubeadm ensures kubeadm of version is in the cache.
func (c *artifactCache) kubeadm(ctx context.Context, version string, logger *log.Logger) (Artifact, error) {
	if version == "" {
		version = DefaultKubernetesVersion
	}
	if !versionFormat.MatchString(version) || !strings.HasPrefix(strings.TrimPrefix(version, "v"), "1.") {
		return Artifact{}, fmt.Errorf("kubernetes version %q: want 1.MINOR.PATCH", version)
	}
	k8sV := "v" + strings.TrimPrefix(version, "v")
	k8sDir := filepath.Join(c.dir, "kubernetes-"+k8sV)
	art := Artifact{Name: "kubeadm", Path: filepath.Join(k8sDir, "kubeadm")}
	if err := c.ensure([]*Artifact{&art}, func() error { return buildKubernetes(ctx, k8sDir, k8sV, []string{"kubeadm"}, logger) }); err != nil {
		return Artifact{}, err
	}
	return art, nil
}

// CachedArtifacts returns the artifacts of versions v that dir already holds
// with their recorded checksum, building nothing; a binary missing from the
// cache is left out. It is how `kprov lab up` finds what to write into the
// lab's artifacts block.
func CachedArtifacts(dir string, v Versions) ([]Artifact, error) {
	if v.Etcd == "" {
		v.Etcd = DefaultEtcdVersion
	}
	if v.Kubernetes == "" {
		v.Kubernetes = DefaultKubernetesVersion
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("artifact cache: %w", err)
	}
	manifest, err := readManifest(filepath.Join(abs, ManifestFile))
	if err != nil {
		return nil, err
	}
	etcdDir := "etcd-v" + strings.TrimPrefix(v.Etcd, "v")
	k8sDir := "kubernetes-v" + strings.TrimPrefix(v.Kubernetes, "v")
	var out []Artifact
	for _, rel := range []string{etcdDir + "/etcd", etcdDir + "/etcdctl", etcdDir + "/etcdutl", k8sDir + "/kubeadm", k8sDir + "/kubelet", k8sDir + "/kubectl"} {
		want, ok := manifest[rel]
		if !ok {
			continue
		}
		path := filepath.Join(abs, rel)
		// A file changed since it was recorded is not offered: apply would
		// refuse it anyway, naming the file.
		if sum, err := fileSHA256(path); err != nil || sum != want {
			continue
		}
		out = append(out, Artifact{Name: filepath.Base(rel), Path: path, SHA256: want})
	}
	return out, nil
}

// buildEtcd builds the three etcd binaries in a throwaway module that
// requires the server, etcdctl and etcdutl modules at the same version.
func buildEtcd(ctx context.Context, outDir, version string, logger *log.Logger) error {
	mods := []string{"go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/etcdctl/v3", "go.etcd.io/etcd/etcdutl/v3"}
	var req []string
	for _, m := range mods {
		req = append(req, m+"@"+version)
	}
	return buildInModule(ctx, "etcd "+version, outDir, "", req, map[string]string{
		"etcd": mods[0], "etcdctl": mods[1], "etcdutl": mods[2],
	}, nil, logger)
}

// buildKubernetes builds the named commands (kubeadm, kubelet, kubectl) from
// k8s.io/kubernetes. That module requires its
// staging modules (k8s.io/api, ...) at v0.0.0 and replaces them with local
// directories that a dependent module cannot see, so the build module
// replaces each with its published v0.MINOR.PATCH release instead.
func buildKubernetes(ctx context.Context, outDir, version string, names []string, logger *log.Logger) error {
	what := strings.Join(names, ", ") + " " + version
	modPath, err := downloadGoMod(ctx, "k8s.io/kubernetes@"+version)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	data, err := os.ReadFile(modPath)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	staging := StagingModules(string(data))
	if len(staging) == 0 {
		return fmt.Errorf("%s: no staging modules (v0.0.0 requirements) in k8s.io/kubernetes's go.mod", what)
	}
	stagingVersion := "v0." + strings.TrimPrefix(version, "v1.")
	var replaces strings.Builder
	for _, m := range staging {
		fmt.Fprintf(&replaces, "replace %s => %s %s\n", m, m, stagingVersion)
	}
	major, minor, _ := strings.Cut(strings.TrimPrefix(version, "v"), ".")
	minor, _, _ = strings.Cut(minor, ".")
	// kubeadm refuses to work without knowing its own version, and kubelet
	// and kubectl report it; the release build sets these.
	ldflags := fmt.Sprintf("-s -w -X k8s.io/component-base/version.gitVersion=%s -X k8s.io/component-base/version.gitMajor=%s -X k8s.io/component-base/version.gitMinor=%s -X k8s.io/component-base/version.gitTreeState=clean",
		version, major, minor)
	gets := make([]string, len(names))
	binaries := map[string]string{}
	for i, n := range names {
		gets[i] = "k8s.io/kubernetes/cmd/" + n + "@" + version
		binaries[n] = "k8s.io/kubernetes/cmd/" + n
	}
	return buildInModule(ctx, what, outDir, replaces.String(), gets, binaries, []string{"-ldflags", ldflags}, logger)
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

// buildInModule creates a temporary module, adds the requirements with go get,
// and builds each package into outDir under its binary name, atomically.
func buildInModule(ctx context.Context, what, outDir, extraGoMod string, gets []string, binaries map[string]string, buildFlags []string, logger *log.Logger) error {
	tmp, err := os.MkdirTemp("", "kprov-build-")
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer os.RemoveAll(tmp)
	gomod := "module kprov.local/artifacts\n\ngo 1.26\n\n" + extraGoMod
	if err := os.WriteFile(filepath.Join(tmp, "go.mod"), []byte(gomod), 0o644); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	logger.Info("building from the Go module proxy (a minute or two, once)", "what", what)
	start := time.Now()
	env := []string{"CGO_ENABLED=0", "GOFLAGS=-mod=mod"}
	if _, err := runGo(ctx, tmp, env, append([]string{"get"}, gets...)...); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	names := make([]string, 0, len(binaries))
	for name := range binaries {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		out := filepath.Join(outDir, "."+name+".new")
		args := append([]string{"build", "-trimpath", "-o", out}, buildFlags...)
		if len(buildFlags) == 0 {
			args = append(args, "-ldflags", "-s -w")
		}
		if _, err := runGo(ctx, tmp, env, append(args, binaries[name])...); err != nil {
			return fmt.Errorf("%s: build %s: %w", what, name, err)
		}
		if err := os.Rename(out, filepath.Join(outDir, name)); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	logger.Info("built", "what", what, "took", time.Since(start).Round(time.Second))
	return nil
}

// fileSHA256 returns the hex SHA-256 of a file.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

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
