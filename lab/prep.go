package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/kprov/kprov/internal/atomicfile"
)

// The machine prepares itself for containerd and kubelet at every boot,
// with a unit the lab writes into its disk. Everything the unit changes is
// the machine's own: its mounts (its own mount namespace) and its network
// settings (its own network namespace). The host's settings stay as they are.

// PrepUnit is the systemd unit on every lab machine that prepares it for
// containerd and kubelet; it has finished before either starts.
const PrepUnit = "kprov-lab-prep.service"

// prepScriptPath is where the unit's script lives on the machine.
const prepScriptPath = "/usr/local/sbin/kprov-lab-prep"

// KernelSetting is a sysctl and the value a lab machine shows for it.
type KernelSetting struct {
	// Key is the path under /proc/sys: "vm/overcommit_memory".
	Key   string
	Value string
}

// KubeletKernelSettings are the kernel-wide settings kubelet checks at start
// and writes when they differ (its container manager's kernel tunables).
// They are the host's, not the machine's: the machine shows kubelet these
// values in files bind-mounted over /proc/sys in its own mount namespace,
// so kubelet finds nothing to write and the host keeps its own.
var KubeletKernelSettings = []KernelSetting{
	{"vm/overcommit_memory", "1"},
	{"vm/panic_on_oom", "0"},
	{"kernel/panic", "10"},
	{"kernel/panic_on_oops", "1"},
	{"kernel/keys/root_maxkeys", "1000000"},
	{"kernel/keys/root_maxbytes", "25000000"},
}

// NetworkSettings are set in each machine's own network namespace: pod
// traffic is routed through the machine, and bridged pod traffic passes
// iptables (kube-proxy's rules), as kubeadm's preflight requires.
var NetworkSettings = []KernelSetting{
	{"net/ipv4/ip_forward", "1"},
	{"net/bridge/bridge-nf-call-iptables", "1"},
	{"net/bridge/bridge-nf-call-ip6tables", "1"},
}

// prepUnitText is the unit file. It runs after the local file systems and
// before containerd and kubelet, whose own units need not know about it.
const prepUnitText = `# Written by kprov lab at every boot.
[Unit]
Description=kprov lab: prepare this machine for containerd and kubelet
DefaultDependencies=no
After=local-fs.target
Before=containerd.service kubelet.service multi-user.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=` + prepScriptPath + `

[Install]
WantedBy=multi-user.target
`

// prepScript renders the script the unit runs.
func prepScript() string {
	var b strings.Builder
	b.WriteString(`#!/bin/sh
# Written by kprov lab at every boot; run by ` + PrepUnit + `.
# Everything here changes this machine's own mount namespace or network
# namespace, never the host's settings.
set -eu

# cgroups: systemd-nspawn mounts the cgroup v1 hierarchies read-only, and
# kubelet, containerd and runc make cgroups. Read-only is a flag of each
# mount, not of the hierarchy: remounting this machine's mounts read-write
# leaves the host's mounts as they are.
mount -o remount,rw /sys/fs/cgroup
for d in /sys/fs/cgroup/*; do
	if [ -d "$d" ] && [ ! -L "$d" ] && mountpoint -q "$d"; then
		mount -o remount,bind,rw "$d"
	fi
done

# net.* belongs to this machine's own network namespace, but nspawn leaves
# /proc/sys read-only: /proc/sys/net alone becomes writable.
if ! mountpoint -q /proc/sys/net; then
	mount --bind /proc/sys/net /proc/sys/net
	mount -o remount,bind,rw /proc/sys/net
fi
set_net() {
	if [ -e "/proc/sys/$1" ]; then
		echo "$2" >"/proc/sys/$1"
	else
		# The bridge settings exist only while the host has br_netfilter
		# loaded; a machine does not load kernel modules into the host.
		echo "kprov-lab-prep: no /proc/sys/$1 (is br_netfilter loaded on the host?)" >&2
	fi
}
`)
	for _, s := range NetworkSettings {
		fmt.Fprintf(&b, "set_net %s %s\n", s.Key, s.Value)
	}
	b.WriteString(`
# kubelet checks kernel-wide settings and writes the ones that differ. They
# are the host's, and /proc/sys is read-only here: kubelet is shown the
# values it wants in files bind-mounted over them, in this machine's mount
# namespace only.
mkdir -p /run/kprov-lab/sysctl
show() {
	[ "$(cat "/proc/sys/$1")" = "$2" ] && return 0
	shown=/run/kprov-lab/sysctl/$(echo "$1" | tr / .)
	echo "$2" >"$shown"
	mount --bind "$shown" "/proc/sys/$1"
}
`)
	for _, s := range KubeletKernelSettings {
		fmt.Fprintf(&b, "show %s %s\n", s.Key, s.Value)
	}
	b.WriteString(`
# kubelet reads kernel messages (its OOM watcher) from /dev/kmsg, which
# nspawn does not give a machine; the console stands in for it.
if [ ! -e /dev/kmsg ] && [ ! -L /dev/kmsg ]; then
	ln -s /dev/console /dev/kmsg
fi
`)
	return b.String()
}

// writePrepUnit writes the unit and its script into the machine's root and
// enables the unit, replacing what an earlier boot wrote.
func writePrepUnit(root string) error {
	unit := filepath.Join(root, "etc/systemd/system", PrepUnit)
	script := filepath.Join(root, prepScriptPath)
	for _, d := range []string{filepath.Dir(unit), filepath.Dir(script), filepath.Join(root, "etc/systemd/system/multi-user.target.wants")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := atomicfile.Write(script, []byte(prepScript()), 0o755); err != nil {
		return err
	}
	if err := atomicfile.Write(unit, []byte(prepUnitText), 0o644); err != nil {
		return err
	}
	link := filepath.Join(root, "etc/systemd/system/multi-user.target.wants", PrepUnit)
	if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.Symlink("../"+PrepUnit, link)
}
