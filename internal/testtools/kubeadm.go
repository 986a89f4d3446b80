// Package testtools builds the real Kubernetes and etcd tools that kprov's
// tests check rendered configuration against, from the Go module proxy, and
// caches them by version so only the first run pays for the build.
//
// It is for tests only; the lab package (branch lab) grows the same builder
// as lab.BuildArtifacts, and this one should give way to it once merged.
package testtools

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// ErrToolchain is wrapped by every error that comes from a missing go
// toolchain or an unreachable module proxy, the only reasons a test may skip.
var ErrToolchain = errors.New("go toolchain or module proxy unavailable")

// CacheDir is where built tools are kept: $XDG_CACHE_HOME/kprov/artifacts,
// else the user cache directory (~/.cache on Linux) with kprov/artifacts.
func CacheDir() (string, error) {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "kprov", "artifacts"), nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("cache directory: %w", err)
	}
	return filepath.Join(d, "kprov", "artifacts"), nil
}

// staging matches a staging module that k8s.io/kubernetes requires at v0.0.0
// and resolves only through a replace directive in its own repository.
var staging = regexp.MustCompile(`(?m)^\s+(k8s\.io/[a-z0-9-]+) v0\.0\.0$`)

// unreachable matches what the go command says when the module proxy or
// the network fails it (as opposed to a build that is wrong): only these
// failures may make a test skip.
var unreachable = regexp.MustCompile(`reading https?://|dial tcp|no such host|connection refused|i/o timeout|TLS handshake timeout|(403|404|410|5\d\d) [A-Z][a-z]`)

// versionFormat is a Kubernetes release version without the leading v.
var versionFormat = regexp.MustCompile(`^1\.(\d+)\.\d+$`)

// Kubeadm returns the path of kubeadm at version (e.g. "1.37.2"), building it
// into cacheDir/kubeadm-v<version>/kubeadm when it is not there yet.
//
// k8s.io/kubernetes is not meant to be required as a module: it lists its
// staging repositories (k8s.io/api, k8s.io/client-go, ...) at v0.0.0 and
// replaces them with ./staging paths. A temporary module that requires it
// therefore needs one replace per staging module, to the published
// v0.<minor>.<patch> tag of that module. The version variables are set
// with -ldflags as Kubernetes' own build does; without them kubeadm
// reports v0.0.0 and refuses every configuration's kubernetesVersion.
func Kubeadm(ctx context.Context, version, cacheDir string) (string, error) {
	m := versionFormat.FindStringSubmatch(version)
	if m == nil {
		return "", fmt.Errorf("kubeadm version %q: want 1.MINOR.PATCH", version)
	}
	minor := m[1]
	dir := filepath.Join(cacheDir, "kubeadm-v"+version)
	bin := filepath.Join(dir, "kubeadm")
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() {
		return bin, nil
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("build kubeadm v%s: %w: %w", version, ErrToolchain, err)
	}
	work, err := os.MkdirTemp("", "kprov-kubeadm-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)

	run := func(args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, goBin, args...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil {
			msg := lastLines(errOut.String(), 20)
			if unreachable.MatchString(msg) {
				return nil, fmt.Errorf("go %s: %w: %w: %s", strings.Join(args, " "), ErrToolchain, err, msg)
			}
			return nil, fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, msg)
		}
		return out.Bytes(), nil
	}

	if _, err := run("mod", "init", "kprov.test/kubeadm"); err != nil {
		return "", fmt.Errorf("build kubeadm v%s: %w", version, err)
	}
	// The module's own go.mod lists the staging modules to replace.
	modJSON, err := run("mod", "download", "-json", "k8s.io/kubernetes@v"+version)
	if err != nil {
		return "", fmt.Errorf("build kubeadm v%s: %w", version, err)
	}
	goMod, err := downloadedGoMod(modJSON)
	if err != nil {
		return "", fmt.Errorf("build kubeadm v%s: %w", version, err)
	}
	edit := []string{"mod", "edit", "-require=k8s.io/kubernetes@v" + version}
	for _, sm := range staging.FindAllStringSubmatch(string(goMod), -1) {
		edit = append(edit, fmt.Sprintf("-replace=%s=%s@v0.%s.%s", sm[1], sm[1], minor, strings.SplitN(version, ".", 3)[2]))
	}
	if _, err := run(edit...); err != nil {
		return "", fmt.Errorf("build kubeadm v%s: %w", version, err)
	}
	if err := os.WriteFile(filepath.Join(work, "tools.go"),
		[]byte("//go:build tools\n\npackage tools\n\nimport _ \"k8s.io/kubernetes/cmd/kubeadm\"\n"), 0o644); err != nil {
		return "", err
	}
	if _, err := run("mod", "tidy"); err != nil {
		return "", fmt.Errorf("build kubeadm v%s: %w", version, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// Build beside the final name and rename, so an interrupted build never leaves a truncated binary in the cache.
	tmp := bin + ".tmp"
	ldflags := fmt.Sprintf("-X k8s.io/component-base/version.gitVersion=v%s -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=%s", version, minor)
	if _, err := run("build", "-trimpath", "-ldflags", ldflags, "-o", tmp, "k8s.io/kubernetes/cmd/kubeadm"); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("build kubeadm v%s: %w", version, err)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	return bin, nil
}

// downloadedGoMod reads the GoMod path out of `go mod download -json` output.
func downloadedGoMod(js []byte) ([]byte, error) {
	m := regexp.MustCompile(`"GoMod":\s*"([^"]+)"`).FindSubmatch(js)
	if m == nil {
		return nil, fmt.Errorf("go mod download: no GoMod in %q", lastLines(string(js), 5))
	}
	return os.ReadFile(string(m[1]))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
