package inventory

import (
	"fmt"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The etcd data directory is the one path on a host that kprov deletes: a
// member's removal ends in `rm -rf DATA_DIR`. These lists say where it must
// never point. They live here, not in provision, so the inventory can refuse
// a bad data_dir at load time without importing the code that changes hosts;
// provision's on-host checks may use the same lists. A test plans every
// example topology and fails when a step writes outside HostPaths, so the
// list cannot silently fall behind the code.

// HostPaths are the files and directories kprov writes on hosts, and those
// kubeadm writes when kprov runs it. A directory listed here is kprov's or
// kubeadm's as a whole; a file is listed alone when its directory is shared
// with the system.
var HostPaths = []string{
	"/etc/etcd",                   // etcd.yaml of an external member
	"/etc/kprov",                  // kubeadm-init.yaml, kubeadm-join.yaml
	"/etc/kubernetes",             // kubeadm: pki/ (kprov uploads it), manifests/, admin.conf, kubelet.conf
	"/var/lib/kprov",              // the apply lock
	"/var/lib/kubelet",            // kubeadm: the kubelet's configuration, flags and certificates
	"/etc/containerd/config.toml", // containerd's configuration
	"/etc/modules-load.d/kprov-kubernetes.conf",    // kernel modules for Kubernetes networking
	"/etc/sysctl.d/99-kprov-kubernetes.conf",       // sysctls for Kubernetes networking
	"/etc/systemd/system/etcd.service",             // the external etcd member's unit
	"/etc/systemd/system/kprov-swapoff.service",    // keeps swap off across reboots
	"/etc/systemd/system/kubelet.service",          // the kubelet's unit
	"/run/systemd/system/kprov-kubeadm.service",    // the oneshot unit kubeadm init and join run in
	"/etc/systemd/system/containerd.service",       // containerd's unit
	"/etc/cni/net.d/10-kprov-bridge.conflist",      // the node's bridge network
	"/etc/systemd/system/kprov-pod-routes.service", // routes to the other nodes' pods
	"/etc/systemd/system/kprov-apiproxy.service",   // the node-local API proxy (its upstreams are in /etc/kprov)
	"/usr/local/bin/etcd",                          // binaries from the artifacts block
	"/usr/local/bin/etcdctl",
	"/usr/local/bin/etcdutl",
	"/usr/local/bin/kubeadm",
	"/usr/local/bin/kubelet",
	"/usr/local/bin/kubectl",
	"/usr/local/bin/containerd",
	"/usr/local/bin/ctr",
	"/usr/local/bin/containerd-shim-runc-v2",
	"/usr/local/bin/runc",
	"/usr/local/bin/kprov-apiproxy",
	"/opt/cni/bin", // the CNI plugins from the artifacts block's cni-plugins archive
}

// SystemDirs are directories the operating system, its packages, its users
// or the container runtime keep their own files in. The data directory may
// live below one of them (the default /var/lib/etcd is below /var/lib) but
// may never be one of them or contain one, since wiping it would take the
// system's files along. The list holds the Filesystem Hierarchy Standard's
// top-level directories, the second-level ones that hold shared data
// (/usr/*, /usr/local/*, /var/*), and the state of the other node
// components kprov installs beside etcd (containerd, CNI).
var SystemDirs = []string{
	"/",
	"/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
	"/lost+found", "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin",
	"/snap", "/srv", "/sys", "/tmp", "/usr", "/var",
	"/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libexec",
	"/usr/include", "/usr/share", "/usr/src", "/usr/local",
	"/usr/local/bin", "/usr/local/sbin", "/usr/local/lib", "/usr/local/share", "/usr/local/etc",
	"/var/backups", "/var/cache", "/var/lib", "/var/local", "/var/lock", "/var/log",
	"/var/mail", "/var/opt", "/var/run", "/var/spool", "/var/tmp",
	"/etc/cni", "/opt/cni", "/var/lib/cni", "/var/lib/containerd", "/run/containerd",
}

// VolatileDirs hold file systems that are emptied at boot or cleaned on a
// timer (/tmp, /var/tmp, /run, /dev/shm) or are not disks at all (/proc,
// /sys, /dev). A member whose data lives there loses it at the next reboot
// or cleanup and comes back as an empty member, so the data directory may
// not be in one of them at any depth.
var VolatileDirs = []string{"/dev", "/proc", "/run", "/sys", "/tmp", "/var/lock", "/var/run", "/var/tmp"}

// homeParents are directories whose children are users' home directories.
var homeParents = []string{"/home"}

// CheckEtcdDataDir returns why p cannot be etcd's data directory, or nil. p
// must be a clean absolute path without control characters, not a system
// directory or a parent of one, not a user's home directory, not on a
// volatile file system, and not overlapping anything kprov writes.
func CheckEtcdDataDir(p string) error {
	if !utf8.ValidString(p) {
		return fmt.Errorf("%q is not valid UTF-8", p)
	}
	if i := strings.IndexFunc(p, unicode.IsControl); i >= 0 {
		return fmt.Errorf("%q contains a control character (%U); remove it", p, []rune(p[i:])[0])
	}
	if !filepath.IsAbs(p) {
		return fmt.Errorf("%q is not an absolute path; write one such as %q", p, DefaultEtcdDataDir)
	}
	if c := filepath.Clean(p); c != p {
		return fmt.Errorf("%q is not a clean path (no trailing '/', '//', '.' or '..'); write %q", p, c)
	}
	for _, rule := range dataDirRules {
		for _, d := range rule.dirs {
			why := ""
			switch {
			case p == d:
				why = rule.is
			case isBelow(d, p):
				why = rule.contains
			case isBelow(p, d):
				why = rule.inside
			}
			if why != "" {
				return fmt.Errorf("%[1]q "+why+"; use a directory of its own, such as %[3]q", p, d, DefaultEtcdDataDir)
			}
		}
	}
	for _, d := range homeParents {
		if filepath.Dir(p) == d {
			return fmt.Errorf("%q is a user's home directory, and removing a member wipes the data directory; use a directory of its own, such as %q", p, DefaultEtcdDataDir)
		}
	}
	return nil
}

// dataDirRules say, for each list, why the data directory may not be one of
// its directories, contain one, or sit inside one ("" where that is fine).
// %[2]s is the directory.
var dataDirRules = []struct {
	dirs                 []string
	is, contains, inside string
}{
	{
		dirs:   VolatileDirs,
		is:     "is %[2]s, which is emptied at boot or is not a disk: the member would lose its data",
		inside: "is in %[2]s, which is emptied at boot or is not a disk: the member would lose its data",
	},
	{
		dirs:     SystemDirs,
		is:       "is a system directory, and removing a member wipes the data directory",
		contains: "contains the system directory %[2]s, and removing a member wipes the data directory",
	},
	{
		dirs:     HostPaths,
		is:       "is a path kprov writes, and removing a member wipes the data directory",
		contains: "contains %[2]s, which kprov writes, and removing a member wipes the data directory",
		inside:   "is inside %[2]s, which kprov writes",
	},
}

// isBelow reports whether the clean absolute path p is strictly inside dir.
func isBelow(p, dir string) bool {
	if dir == "/" {
		return p != "/"
	}
	return strings.HasPrefix(p, dir+"/")
}
