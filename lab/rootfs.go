package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/charmbracelet/log"
)

// Suite is the Debian release lab machines run.
const Suite = "bookworm"

// basePackages is what every lab machine has besides Debian's minbase:
// systemd as init, sshd for kprov, and the tools kprov's steps call; then
// what a container runtime and kubeadm and kubelet call that kprov does not
// install: runc (kprov's artifacts bring containerd and the CNI plugins, the
// lab's inventory takes runc from here, as a host's own package), iptables
// and conntrack (kube-proxy, kubeadm's preflight), socat and ethtool
// (preflight warns without them), kmod (modprobe). No containerd: a fresh
// lab machine is a host kprov installs the runtime on. The list is part of
// the cache key, so changing it builds a new root filesystem beside the old
// one.
var basePackages = []string{
	"openssh-server", "systemd", "systemd-sysv", "iproute2", "sudo", "procps", "ca-certificates",
	"runc", "iptables", "conntrack", "socat", "ethtool", "kmod",
}

// rootfsRecipe changes whenever finishRootfs changes what it writes, so a
// cached root filesystem made by an older recipe is rebuilt.
const rootfsRecipe = "2"

// rootfsKey names a cached root filesystem after everything that decides its contents.
func rootfsKey(suite string, packages []string) string {
	p := slices.Clone(packages)
	slices.Sort(p)
	sum := sha256.Sum256([]byte(rootfsRecipe + "\n" + suite + "\n" + strings.Join(p, ",")))
	return suite + "-" + hex.EncodeToString(sum[:])[:12]
}

// sshdLabConfig makes sshd offer only the machine's own ed25519 host key
// (the one known_hosts pins) and accept only the lab key for root.
const sshdLabConfig = `# Written by kprov lab.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
`

// ensureRootfs returns the cached base root filesystem, building it with
// debootstrap first when it is missing. A flock on the cache entry keeps two
// concurrent `lab up` runs from building it twice.
func ensureRootfs(ctx context.Context, run Runner, cacheDir, mirror string, logger *log.Logger) (string, error) {
	key := rootfsKey(Suite, basePackages)
	final := filepath.Join(cacheDir, "rootfs", key)
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return "", fmt.Errorf("rootfs cache: %w", err)
	}
	unlock, err := lockFile(final + ".lock")
	if err != nil {
		return "", fmt.Errorf("rootfs cache: %w", err)
	}
	defer unlock()
	if _, err := os.Stat(filepath.Join(final, "etc", "os-release")); err == nil {
		logger.Debug("base root filesystem cached", "path", final)
		return final, nil
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return "", errors.New("debootstrap not found: install the Debian package debootstrap (scripts/setup)")
	}
	if mirror == "" {
		if mirror, err = MirrorFromApt("/", Suite); err != nil {
			return "", fmt.Errorf("find a Debian mirror (or pass one): %w", err)
		}
	}
	tmp := final + ".building"
	if err := os.RemoveAll(tmp); err != nil {
		return "", fmt.Errorf("rootfs cache: %w", err)
	}
	logger.Info("building base root filesystem with debootstrap (a few minutes, once)", "suite", Suite, "mirror", mirror, "path", final)
	start := time.Now()
	if _, err := run.Run(ctx, "debootstrap", "--variant=minbase", "--include="+strings.Join(basePackages, ","), Suite, tmp, mirror); err != nil {
		return "", fmt.Errorf("build base root filesystem: %w", err)
	}
	if err := finishRootfs(tmp); err != nil {
		return "", fmt.Errorf("build base root filesystem: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", fmt.Errorf("rootfs cache: %w", err)
	}
	logger.Info("base root filesystem built", "took", time.Since(start).Round(time.Second))
	return final, nil
}

// finishRootfs removes what must differ per machine from the shared root
// (host keys, machine ID, hostname) and configures sshd for the lab.
func finishRootfs(root string) error {
	keys, _ := filepath.Glob(filepath.Join(root, "etc/ssh/ssh_host_*"))
	for _, k := range keys {
		if err := os.Remove(k); err != nil {
			return err
		}
	}
	// An empty machine-id is the documented "not yet set" state; each machine gets its own at boot.
	if err := os.WriteFile(filepath.Join(root, "etc/machine-id"), nil, 0o444); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "etc/ssh/sshd_config.d/kprov-lab.conf"), []byte(sshdLabConfig), 0o644); err != nil {
		return err
	}
	// debootstrap leaves package lists and .debs behind; every machine would carry them.
	for _, dir := range []string{"var/cache/apt/archives", "var/lib/apt/lists"} {
		entries, _ := filepath.Glob(filepath.Join(root, dir, "*"))
		for _, e := range entries {
			if fi, err := os.Lstat(e); err == nil && fi.Mode().IsRegular() {
				os.Remove(e)
			}
		}
	}
	return nil
}
