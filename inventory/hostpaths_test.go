package inventory

import "testing"

// TestEtcdDataDirRules: every directory named in issue 12 and each rule of
// CheckEtcdDataDir, refused with its reason; ordinary data directories pass.
func TestEtcdDataDirRules(t *testing.T) {
	valid := []string{
		DefaultEtcdDataDir, "/var/lib/etcd-main", "/data/etcd", "/srv/etcd", "/opt/etcd/data",
		"/mnt/ssd/etcd", "/etc/etcd-data", "/home/ops/etcd", "/var/lib/etcd data",
	}
	invalid := map[string]string{
		"/":                                "is a system directory",
		"/etc":                             "is a system directory",
		"/usr":                             "is a system directory",
		"/var":                             "is a system directory",
		"/var/lib":                         "is a system directory",
		"/usr/local/bin":                   "is a system directory",
		"/home":                            "is a system directory",
		"/root":                            "is a system directory",
		"/boot":                            "is a system directory",
		"/opt":                             "is a system directory",
		"/srv":                             "is a system directory",
		"/bin":                             "is a system directory",
		"/sbin":                            "is a system directory",
		"/lib":                             "is a system directory",
		"/var/lib/containerd":              "is a system directory",
		"/usr/local":                       "is a system directory",
		"/opt/cni/..":                      "not a clean path",
		"/tmp":                             "emptied at boot",
		"/tmp/etcd":                        "emptied at boot",
		"/var/tmp/etcd":                    "emptied at boot",
		"/run/etcd":                        "emptied at boot",
		"/dev/shm/etcd":                    "emptied at boot",
		"/proc":                            "emptied at boot",
		"/sys":                             "emptied at boot",
		"/dev":                             "emptied at boot",
		"/home/ops":                        "a user's home directory",
		"/etc/kubernetes":                  "is a path kprov writes",
		"/etc/etcd":                        "is a path kprov writes",
		"/var/lib/kprov":                   "is a path kprov writes",
		"/etc/systemd/system/etcd.service": "is a path kprov writes",
		"/usr/local/bin/etcd":              "is a path kprov writes",
		"/etc/systemd":                     "contains /etc/systemd/system/etcd.service, which kprov writes",
		"/etc/containerd":                  "contains /etc/containerd/config.toml, which kprov writes",
		"/etc/kubernetes/pki/etcd":         "is inside /etc/kubernetes, which kprov writes",
		"/var/lib/kubelet/etcd":            "is inside /var/lib/kubelet, which kprov writes",
		"/var/lib/etcd/":                   `not a clean path (no trailing '/', '//', '.' or '..'); write "/var/lib/etcd"`,
		"/var//lib/etcd":                   "not a clean path",
		"/var/lib/../etcd":                 "not a clean path",
		"var/lib/etcd":                     "not an absolute path",
		"":                                 "not an absolute path",
		"/var/lib/etcd\n/etc":              "control character (U+000A)",
		"/var/lib/etcd\x00":                "control character (U+0000)",
		"/var/lib/\xffetcd":                "not valid UTF-8",
	}
	checkTable(t, "CheckEtcdDataDir", CheckEtcdDataDir, valid, invalid)
}
