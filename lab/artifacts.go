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
	"slices"
	"strings"
	"time"

	"github.com/charmbracelet/log"
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
	Name   string // etcd, etcdctl, etcdutl, kubeadm, kubelet, kubectl
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

// BuildArtifacts builds etcd, etcdctl, etcdutl, kubeadm, kubelet and kubectl from the Go module
// proxy into dir (dir/etcd-vX/..., dir/kubernetes-vY/...) and records
// their checksums in dir/SHA256SUMS. A binary whose file matches its recorded
// checksum is not built again. The binaries are static (CGO_ENABLED=0), so
// they run on any lab machine, as an air-gapped site's would.
func BuildArtifacts(ctx context.Context, dir string, v Versions, logger *log.Logger) (Artifacts, error) {
	if v.Etcd == "" {
		v.Etcd = DefaultEtcdVersion
	}
	if v.Kubernetes == "" {
		v.Kubernetes = DefaultKubernetesVersion
	}
	etcdV, k8sV := "v"+strings.TrimPrefix(v.Etcd, "v"), "v"+strings.TrimPrefix(v.Kubernetes, "v")
	if _, err := exec.LookPath("go"); err != nil {
		return Artifacts{}, errors.New("the go command is needed to build artifacts: install Go")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Artifacts{}, fmt.Errorf("artifact cache: %w", err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return Artifacts{}, fmt.Errorf("artifact cache: %w", err)
	}
	unlock, err := lockFile(filepath.Join(abs, ".lock"))
	if err != nil {
		return Artifacts{}, fmt.Errorf("artifact cache: %w", err)
	}
	defer unlock()
	manifest, err := readManifest(filepath.Join(abs, ManifestFile))
	if err != nil {
		return Artifacts{}, err
	}
	etcdDir := filepath.Join(abs, "etcd-"+etcdV)
	k8sDir := filepath.Join(abs, "kubernetes-"+k8sV)
	a := Artifacts{
		Etcd:    Artifact{Name: "etcd", Path: filepath.Join(etcdDir, "etcd")},
		Etcdctl: Artifact{Name: "etcdctl", Path: filepath.Join(etcdDir, "etcdctl")},
		Etcdutl: Artifact{Name: "etcdutl", Path: filepath.Join(etcdDir, "etcdutl")},
		Kubeadm: Artifact{Name: "kubeadm", Path: filepath.Join(k8sDir, "kubeadm")},
		Kubelet: Artifact{Name: "kubelet", Path: filepath.Join(k8sDir, "kubelet")},
		Kubectl: Artifact{Name: "kubectl", Path: filepath.Join(k8sDir, "kubectl")},
	}
	cached := func(arts ...*Artifact) bool {
		for _, art := range arts {
			rel, _ := filepath.Rel(abs, art.Path)
			sum, err := fileSHA256(art.Path)
			if err != nil || manifest[rel] != sum {
				return false
			}
			art.SHA256 = sum
		}
		return true
	}
	if !cached(&a.Etcd, &a.Etcdctl, &a.Etcdutl) {
		if err := buildEtcd(ctx, etcdDir, etcdV, logger); err != nil {
			return Artifacts{}, err
		}
	}
	// kubelet and kubectl were added to the cache later than kubeadm: a
	// cache holding kubeadm only builds the two, not all three.
	if !cached(&a.Kubeadm) {
		if err := buildKubernetes(ctx, k8sDir, k8sV, []string{"kubeadm"}, logger); err != nil {
			return Artifacts{}, err
		}
	}
	if !cached(&a.Kubelet, &a.Kubectl) {
		if err := buildKubernetes(ctx, k8sDir, k8sV, []string{"kubelet", "kubectl"}, logger); err != nil {
			return Artifacts{}, err
		}
	}
	for _, art := range []*Artifact{&a.Etcd, &a.Etcdctl, &a.Etcdutl, &a.Kubeadm, &a.Kubelet, &a.Kubectl} {
		if art.SHA256, err = fileSHA256(art.Path); err != nil {
			return Artifacts{}, fmt.Errorf("%s: %w", art.Name, err)
		}
		rel, _ := filepath.Rel(abs, art.Path)
		manifest[rel] = art.SHA256
	}
	if err := writeManifest(filepath.Join(abs, ManifestFile), manifest); err != nil {
		return Artifacts{}, err
	}
	return a, nil
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
	out, err := runCommand(ctx, tmp, []string{"GOFLAGS=-mod=mod"}, "go", "mod", "download", "-json", modVersion)
	if err != nil {
		return "", err
	}
	var info struct{ GoMod, Error string }
	if err := json.Unmarshal(out, &info); err != nil {
		return "", fmt.Errorf("go mod download %s: %w", modVersion, err)
	}
	if info.Error != "" || info.GoMod == "" {
		return "", fmt.Errorf("go mod download %s: %s", modVersion, info.Error)
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
	if _, err := runCommand(ctx, tmp, env, "go", append([]string{"get"}, gets...)...); err != nil {
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
		if _, err := runCommand(ctx, tmp, env, "go", append(args, binaries[name])...); err != nil {
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
	return writeFileAtomic(path, []byte(b.String()), 0o644)
}
