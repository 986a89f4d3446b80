package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// ErrNotRoot is returned when a lab operation runs without root privileges.
var ErrNotRoot = errors.New("kprov lab must run as root: it mounts overlayfs, creates network namespaces and boots containers (try sudo)")

// tool is an external program the lab needs and the Debian package that ships it.
type tool struct{ binary, pkg string }

// Preflight checks what every lab operation needs on the host: root, the
// tools (naming the Debian package to install), overlayfs and network
// namespaces in the kernel. It says everything that is missing at once.
func Preflight() error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	var errs []error
	for _, t := range []tool{{"systemd-nspawn", "systemd-container"}, {"ip", "iproute2"}, {"tc", "iproute2"}} {
		if _, err := exec.LookPath(t.binary); err != nil {
			errs = append(errs, fmt.Errorf("%s not found: install the Debian package %s (scripts/setup)", t.binary, t.pkg))
		}
	}
	if !kernelHasOverlay() {
		errs = append(errs, errors.New("the kernel has no overlay filesystem: load it with `modprobe overlay` (CONFIG_OVERLAY_FS)"))
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		errs = append(errs, errors.New("the kernel has no network namespaces (CONFIG_NET_NS)"))
	}
	return errors.Join(errs...)
}

// kernelHasOverlay reports whether overlayfs is available, loading the module if it can.
func kernelHasOverlay() bool {
	has := func() bool {
		data, err := os.ReadFile("/proc/filesystems")
		return err == nil && strings.Contains(string(data), "\toverlay\n")
	}
	if has() {
		return true
	}
	_ = exec.Command("modprobe", "overlay").Run()
	return has()
}
