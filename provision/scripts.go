package provision

import (
	"fmt"
	"maps"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kprov/kprov/internal/shell"
	"github.com/kprov/kprov/provision/plan"
)

// Every command kprov runs on a host is written in this file, so a reviewer
// can read in one sitting everything kprov can do to a host as root. The
// golden test (scripts_test.go, testdata/scripts.golden) shows each one's
// exact text. Every path, unit and value is quoted with shell.Quote; the
// scripts that change something check the live state first and print
// "changed" only when they did, so a step run twice changes nothing the
// second time.

// shellQuote quotes s for sh.
func shellQuote(s string) string { return shell.Quote(s) }

// binPath puts the directory kprov installs artifacts into on the path of
// kubeadm and kubectl commands: a non-login shell may not have it.
const binPath = `PATH="/usr/local/sbin:/usr/local/bin:$PATH"; export PATH; `

// probedServices are the systemd units whose ActiveState the probe reports.
const probedServices = "etcd kubelet containerd kprov-swapoff.service kprov-pod-routes.service kprov-apiproxy.service"

// script renders the probe: one POSIX sh script that only reads, so a host's
// facts cost one SSH session. Every line it prints is key=value and the last
// is end=ok, so output cut short is detected instead of read as "absent".
// Nothing in it fails the script: a probe that cannot answer prints nothing
// (or "unreadable") and the others still run.
func (p hostProbe) script() (string, error) {
	var b strings.Builder
	b.WriteString(`# kprov fact probe: read-only
export LC_ALL=C
PATH="$PATH:/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin"
echo "hostname=$(uname -n)"
echo "arch=$(uname -m)"
if [ -r /etc/os-release ]; then grep -E '^(ID|VERSION_ID)=' /etc/os-release | sed 's/^/os_release./'; fi
# /proc/swaps has a header line and one line per active swap area.
if [ -r /proc/swaps ] && [ "$(sed 1d /proc/swaps | grep -c .)" -gt 0 ]; then echo swap=on; else echo swap=off; fi
if command -v systemctl >/dev/null 2>&1; then
  for u in ` + probedServices + `; do echo "service.$u=$(systemctl is-active "$u" 2>/dev/null)"; done
fi
v() { if command -v "$1" >/dev/null 2>&1; then echo "version.$1=$("$@" 2>/dev/null | head -n 1)"; fi; }
v etcd --version
v kubeadm version -o short
v kubelet --version
v kubectl version --client
v containerd --version
v ctr --version
v containerd-shim-runc-v2 -v
v runc --version
v ip -V
v iptables --version
v ip6tables --version
`)
	// What containerd's and the kubelet's settings follow (roles.RuntimeData):
	// stat -f names /sys/fs/cgroup "cgroup2fs" under cgroup v2 and "tmpfs"
	// under v1; CAP_SYS_RESOURCE is bit 24 of the bounding set.
	fmt.Fprintf(&b, `echo "cgroup_fs=$(stat -f -c %%T /sys/fs/cgroup 2>/dev/null)"
if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] || [ -d /run/systemd/system ]; then echo systemd_init=yes; else echo systemd_init=no; fi
echo "root_fs=$(stat -f -c %%T / 2>/dev/null)"
echo "cap_bnd=$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status 2>/dev/null)"
echo "containerd_path=$(command -v containerd 2>/dev/null)"
for f in %s/*; do if [ -f "$f" ] && [ -x "$f" ]; then echo "cni_plugin=${f##*/}"; fi; done
`, shellQuote(p.CNIBinDir))
	b.WriteString(`sum() {
  if [ ! -f "$1" ]; then echo "file=absent $1"
  elif s=$(sha256sum < "$1" 2>/dev/null); then echo "file=${s%% *} $1"
  else echo "file=unreadable $1"; fi
}
exists() { if [ -e "$2" ]; then echo "$1=yes"; else echo "$1=no"; fi; }
`)
	for _, f := range p.Files {
		if strings.ContainsAny(f, "\n\x00") || !strings.HasPrefix(f, "/") {
			return "", fmt.Errorf("file %q: want an absolute path on one line", f)
		}
		fmt.Fprintf(&b, "sum %s\n", shellQuote(f))
	}
	if p.Images {
		b.WriteString(probeImages(p.ImagesTimeout))
	}
	fmt.Fprintf(&b, "exists joined %s\n", shellQuote(p.KubeletConf))
	fmt.Fprintf(&b, "exists control_plane %s\n", shellQuote(p.APIServerManifest))
	// etcd keeps its WAL and snapshots under DATA_DIR/member: an empty or
	// half-created data directory is not a member's data.
	fmt.Fprintf(&b, "exists etcd_data %s\n", shellQuote(p.EtcdDataDir+"/member"))
	// base64 keeps the file on one line whatever it holds.
	fmt.Fprintf(&b, "if [ -f %[1]s ]; then printf 'etcd_config='; base64 < %[1]s | tr -d '\\n'; echo; fi\n", shellQuote(p.EtcdConfig))
	b.WriteString("echo end=ok\n")
	return b.String(), nil
}

// containerdSocket is where ctr finds containerd unless told otherwise.
const containerdSocket = "/run/containerd/containerd.sock"

// ctrPrintImages prints "image=REF DIGEST" for every image of the list
// `ctr images ls` printed into $l (its columns: REF TYPE DIGEST SIZE
// PLATFORMS LABELS, after a header line; SIZE holds a space, so only the
// first and third columns are read).
const ctrPrintImages = `printf '%s\n' "$l" | awk 'NR > 1 && NF >= 3 {print "image=" $1 " " $3}'`

// probeImages is the probe's part on a Kubernetes node: containerd's
// images in the k8s.io namespace, or why they cannot be listed. It never
// fails the probe: a host without containerd yet (a fresh one) has no
// images, which the plan handles by importing them. ctr is bounded by
// timeout (limit, at least a second) where coreutils has it, so a hung or
// overloaded containerd costs the images only: the limit is a part of the
// probe's own timeout, and a probe that ran out of time would report the
// whole host as unreachable.
func probeImages(limit time.Duration) string {
	secs := max(int(limit/time.Second), 1)
	return fmt.Sprintf(`t=; if command -v timeout >/dev/null 2>&1; then t="timeout %d"; fi
`, secs) + `if ! command -v ctr >/dev/null 2>&1; then echo "images=unknown: ctr not found"
elif [ ! -S ` + containerdSocket + ` ]; then echo "images=unknown: containerd is not running"
elif l=$($t ctr -n ` + plan.ImagesK8sNamespace + ` images ls 2>/dev/null); then echo images=listed; ` + ctrPrintImages + `
else echo "images=unknown: ctr images ls failed"; fi
`
}

// scriptListImages lists containerd's k8s.io images as "image=REF DIGEST"
// lines, and fails with ctr's error when containerd cannot answer.
const scriptListImages = binPath + `l=$(ctr -n ` + plan.ImagesK8sNamespace + ` images ls) || exit $?
` + ctrPrintImages

// scriptMakeImageDir makes the directory archives are uploaded to for
// their import: root's alone, since an archive is read as root.
var scriptMakeImageDir = "mkdir -p -m 0700 -- " + shellQuote(plan.ImageImportDir)

// scriptRemoveFile removes one file kprov put on the host.
func scriptRemoveFile(file string) string { return "rm -f -- " + shellQuote(file) }

// pinnedLabel is the label containerd's CRI plugin reports as a pinned
// image; the kubelet's image garbage collection never removes a pinned
// image, so an imported image stays when no container uses it for a while
// (nothing could pull it back: the nodes pull nothing).
const pinnedLabel = "io.cri-containerd.pinned=pinned"

// scriptImportImages imports the uploaded archive file (which must have
// the SHA-256 sum) into containerd's k8s.io namespace, where the kubelet
// finds images, checks that containerd then lists every image of want
// under its reference with its digest, pins them, and removes the archive
// whatever happens (the trap).
//
// ctr unpacks into its own default snapshotter (overlayfs) unless told
// otherwise, but containers are created in the snapshotter containerd's
// CRI plugin is configured with, and an image not unpacked there fails at
// the first container; the script asks containerd which one that is
// (containerd config dump: the first non-empty snapshotter setting, which
// is the CRI plugin's). containerd 2's ctr imports through the transfer
// service unless given --local, which does not unpack as asked; the ctr of
// containerd 1.x has no --local flag and always imports locally.
func scriptImportImages(file, sum string, want []plan.ImageRef) string {
	var wants, refs []string
	for _, r := range want {
		wants = append(wants, shellQuote(r.Ref+" "+r.Digest))
		refs = append(refs, shellQuote(r.Ref))
	}
	ns := plan.ImagesK8sNamespace
	return binPath + `f=` + shellQuote(file) + `
trap 'rm -f -- "$f"' EXIT
trap 'rm -f -- "$f"; exit 129' HUP INT TERM
s=$(sha256sum < "$f") || exit 1
s=${s%% *}
if [ "$s" != ` + shellQuote(sum) + ` ]; then echo "$f has sha256 $s on the host, want ` + sum + `: the upload was damaged" >&2; exit 3; fi
sn=$(containerd config dump 2>/dev/null | sed -n "s/^[[:space:]]*snapshotter = [\"']\([^\"']\{1,\}\)[\"'][[:space:]]*$/\1/p" | head -n 1)
local=; if ctr images import --help 2>&1 | grep -q -e '--local'; then local=--local; fi
ctr -n ` + ns + ` images import $local ${sn:+--snapshotter "$sn"} "$f" >/dev/null || exit $?
l=$(ctr -n ` + ns + ` images ls) || exit $?
for want in ` + strings.Join(wants, " ") + `; do
  if ! printf '%s\n' "$l" | awk 'NR > 1 && NF >= 3 {print $1 " " $3}' | grep -qxF -e "$want"; then echo "after the import containerd does not list $want" >&2; exit 3; fi
done
for ref in ` + strings.Join(refs, " ") + `; do ctr -n ` + ns + ` images label "$ref" ` + pinnedLabel + ` >/dev/null || exit $?; done
echo changed`
}

// preflightScript only reads, except for the fsync probe, which writes and
// removes one small file in a private directory it makes beside the etcd
// data directory (nothing on a host without etcd).
func preflightScript(binaries []string, etcdDataDir string) string {
	var b strings.Builder
	b.WriteString(`# kprov preflight
export LC_ALL=C
PATH="/usr/local/sbin:/usr/local/bin:$PATH"
echo "clock=$(date +%s%N)"
if command -v ss >/dev/null 2>&1; then
  echo ports=known
  ss -Hltn 2>/dev/null | awk '{print $4}' | sed 's/.*://' | sort -un | sed 's/^/listen=/'
fi
`)
	for _, bin := range binaries {
		fmt.Fprintf(&b, "if command -v %[1]s >/dev/null 2>&1; then echo bin.%[1]s=yes; else echo bin.%[1]s=no; fi\n", shellQuote(bin))
	}
	if etcdDataDir != "" {
		fmt.Fprintf(&b, `d=%s
while [ ! -d "$d" ]; do d=$(dirname "$d"); done
echo "disk_free_kib=$(df -Pk "$d" | awk 'NR==2 {print $4}')"
# The probe writes inside a fresh private directory (mktemp -d: a new
# name, mode 0700, created exclusively), so a link or file planted in a
# shared parent such as /tmp is never followed or overwritten.
if t=$(mktemp -d "$d/.kprov-fsync.XXXXXXXX" 2>/dev/null); then
  s=$(date +%%s%%N)
  if dd if=/dev/zero of="$t/probe" bs=8k count=25 oflag=dsync 2>/dev/null; then e=$(date +%%s%%N); echo "fsync_ns=$(( (e - s) / 25 ))"; fi
  rm -rf -- "$t"
fi
`, shellQuote(etcdDataDir))
	}
	b.WriteString("echo end=ok\n")
	return b.String()
}

// scriptArchiveUnpacked prints "present" when the marker file holds the
// archive's checksum: the archive was unpacked there already.
func scriptArchiveUnpacked(marker, sha256 string) string {
	return fmt.Sprintf(`if [ "$(cat %s 2>/dev/null)" = %s ]; then echo present; fi`, shellQuote(marker), shellQuote(sha256))
}

// scriptUnpackArchive unpacks an uploaded .tgz into dir: it checks the
// archive's SHA-256 on the host, extracts it into a fresh private directory
// beside its target (mktemp -d: mode 0700, a new name), and renames each
// regular file at the archive's top level into dir (a rename on one file
// system, so a plugin is never seen half written). Links, directories and
// anything deeper are left out. The marker, written last, records the
// archive's checksum; the archive and the temporary directory are removed
// whatever happens.
func scriptUnpackArchive(archive, sha256, dir, marker string) string {
	return fmt.Sprintf(`a=%s; want=%s; d=%s; m=%s
trap 'rm -rf -- "$a" "$m.tmp" ${t:+"$t"}' EXIT
got=$(sha256sum < "$a") || exit 1
if [ "${got%%%% *}" != "$want" ]; then echo "$a has sha256 ${got%%%% *}, want $want: refusing to unpack it" >&2; exit 3; fi
t=$(mktemp -d "$d/.kprov-unpack.XXXXXXXX") || exit 1
tar -xzf "$a" -C "$t" --no-same-owner || exit 1
n=0
for f in "$t"/*; do
  if [ -L "$f" ] || [ ! -f "$f" ]; then continue; fi
  if [ -x "$f" ]; then chmod 0755 "$f"; else chmod 0644 "$f"; fi
  mv -f -- "$f" "$d/${f##*/}" || exit 1
  n=$((n + 1))
done
if [ "$n" -eq 0 ]; then echo "the archive holds no files at its top level: want the plugin binaries there" >&2; exit 3; fi
printf '%%s\n' "$want" > "$m.tmp" && mv -f -- "$m.tmp" "$m" && echo changed`, shellQuote(archive), shellQuote(sha256), shellQuote(dir), shellQuote(marker))
}

// scriptMakeDirs creates the directories uploads go into: the transport
// writes a temporary file beside its target, so the directory must exist.
func scriptMakeDirs(dirs []string) string {
	return "mkdir -p -- " + shell.Join(dirs...)
}

// scriptStartService enables and starts a unit unless it already runs
// enabled; daemon-reload first, since the unit file may have just been written.
func scriptStartService(unit string) string {
	u := shellQuote(unit)
	return fmt.Sprintf("if systemctl is-active --quiet %[1]s && systemctl is-enabled --quiet %[1]s; then :; else systemctl daemon-reload && systemctl enable --now %[1]s && echo changed%[2]s; fi", u, unitJournalOnFailure(u))
}

// scriptRestartService restarts a unit, for a configuration it reads only at start.
func scriptRestartService(unit string) string {
	u := shellQuote(unit)
	return "{ systemctl daemon-reload && systemctl restart " + u + "; }" + unitJournalOnFailure(u)
}

// scriptStopService stops and disables a unit that runs or is enabled.
func scriptStopService(unit string) string {
	return fmt.Sprintf("if systemctl is-active --quiet %[1]s || systemctl is-enabled --quiet %[1]s; then systemctl disable --now %[1]s && echo changed; fi", shellQuote(unit))
}

// unitJournalOnFailure appends the unit's last journal lines to stderr when
// the command before it fails, so the error names the cause instead of
// pointing the operator at the host's journal.
func unitJournalOnFailure(quotedUnit string) string {
	return fmt.Sprintf(" || { rc=$?; journalctl -u %s -n 15 --no-pager -o cat >&2; exit $rc; }", quotedUnit)
}

// scriptWipeDataDir removes an etcd data directory, and only one that is
// provably etcd's (RELIABILITY 20): it must be a real directory (never a
// symbolic link, which rm would not follow but a later write would) that
// holds an etcd member's data (member/, itself a real directory) or
// nothing. Anything else stops the step with what was found, exit 3, and
// nothing removed. Files kprov does not know are never deleted.
func scriptWipeDataDir(dir string) string {
	return fmt.Sprintf(`d=%s
if [ -L "$d" ]; then echo "refusing to wipe $d: it is a symbolic link" >&2; exit 3; fi
if [ ! -e "$d" ]; then exit 0; fi
if [ ! -d "$d" ]; then echo "refusing to wipe $d: it is not a directory" >&2; exit 3; fi
if [ -L "$d/member" ]; then echo "refusing to wipe $d: $d/member is a symbolic link" >&2; exit 3; fi
other=$(find "$d" -mindepth 1 -maxdepth 1 ! -name member -print | head -n 5)
if [ -n "$other" ]; then echo "refusing to wipe $d: it holds more than an etcd member's data:" >&2; printf '%%s\n' "$other" >&2; exit 3; fi
if [ -e "$d/member" ] && [ ! -d "$d/member" ]; then echo "refusing to wipe $d: $d/member is not a directory" >&2; exit 3; fi
rm -rf -- "$d" && echo changed`, shellQuote(dir))
}

// scriptEtcdRestored prints "restored" when the data directory holds a
// member's data and the marker holds the restore's token: the rule by which
// a member restored by an earlier run is not restored twice.
func scriptEtcdRestored(dataDir, marker, token string) string {
	return fmt.Sprintf(`if [ -d %s/member ] && [ -f %[2]s ] && [ "$(cat -- %[2]s)" = %[3]s ]; then echo restored; fi`, shellQuote(dataDir), shellQuote(marker), shellQuote(token))
}

// scriptEtcdRestore restores an etcd snapshot into an external member's
// data directory for kprov restore (RELIABILITY 22), with the host's
// etcdutl. It is a no-op when the data directory holds a member's data and
// the restore marker holds this restore's token: the member was restored by
// an earlier run of the same restore, and restoring it twice would throw
// away what it has served since. It never replaces a data directory that
// holds anything else (exit 3, nothing changed): kprov restore refuses such
// hosts before this, and this is the last guard. etcdutl writes into a
// directory of its own beside the data directory; the marker is written
// before that directory is moved into place, so an interruption leaves
// either an empty data directory (restored again next time) or a restored
// one with its marker.
func scriptEtcdRestore(s plan.Step, marker, snapshot string) string {
	fill := fmt.Sprintf(`etcdutl snapshot restore "$s" --name %s --initial-cluster %s --initial-cluster-token "$t" --initial-advertise-peer-urls %s --data-dir "$tmp" --bump-revision %d --mark-compacted || exit $?`,
		shellQuote(s.Member), shellQuote(s.InitialCluster), shellQuote(s.PeerURL), plan.EtcdRestoreRevisionBump)
	return binPath + restoreInto(s, marker, snapshot, fill)
}

// scriptEtcdRestoreArchive is scriptEtcdRestore for a stacked member, which
// has no etcdutl on its host (kubeadm runs etcd from an image): etcdutl's
// own code restored the data directory on the operator's machine (the same
// member list, token, revision bump and compaction mark), and this unpacks
// that archive, checked against its SHA-256 first, with the same guards,
// marker and order.
func scriptEtcdRestoreArchive(s plan.Step, marker, archive, sha256 string) string {
	fill := fmt.Sprintf(`got=$(sha256sum < "$s") || exit 1
if [ "${got%%%% *}" != %s ]; then echo "$s has sha256 ${got%%%% *}, want %s: refusing to unpack it" >&2; rm -f -- "$s"; exit 3; fi
mkdir -m 0700 -- "$tmp" && tar -xzf "$s" -C "$tmp" --no-same-owner || exit $?
if [ ! -d "$tmp/member" ]; then echo "the restored archive holds no member/ directory" >&2; exit 3; fi`, shellQuote(sha256), sha256)
	return restoreInto(s, marker, archive, fill)
}

// restoreInto is the frame both restore scripts share: the no-op for a
// member this restore filled, the refusals, and the marker written before
// the directory fill made is moved into place.
func restoreInto(s plan.Step, marker, source, fill string) string {
	return fmt.Sprintf(`d=%s; m=%s; t=%s; s=%s
if [ -d "$d/member" ] && [ -f "$m" ] && [ "$(cat -- "$m")" = "$t" ]; then rm -f -- "$s"; exit 0; fi
if [ -L "$d" ]; then echo "refusing to restore into $d: it is a symbolic link" >&2; exit 3; fi
if [ -e "$d" ] && [ -n "$(ls -A -- "$d")" ]; then echo "refusing to restore into $d: it is not empty and was not filled by this restore (token $t); kprov restore never replaces a data directory: wipe it or use a fresh host" >&2; exit 3; fi
tmp="$d.kprov-restore"
rm -rf -- "$tmp"
%s
mkdir -p -- "$(dirname -- "$m")" && printf '%%s\n' "$t" > "$m.tmp" && mv -f -- "$m.tmp" "$m" || exit $?
if [ -d "$d" ]; then rmdir -- "$d" || exit $?; fi
mv -- "$tmp" "$d" && chmod 0700 "$d" && rm -f -- "$s" && echo changed`,
		shellQuote(s.Path), shellQuote(marker), shellQuote(s.ClusterToken), shellQuote(source), fill)
}

// scriptExists prints "present" when path exists.
func scriptExists(path string) string {
	return "if [ -e " + shellQuote(path) + " ]; then echo present; fi"
}

// scriptKubeadmValidate has the host's own kubeadm check a configuration
// before it is used (RELIABILITY 13).
func scriptKubeadmValidate(config string) string {
	return binPath + "kubeadm config validate --config " + shellQuote(config)
}

// scriptKubeadm runs a kubeadm command line the planner built from fixed
// words and the rendered configuration's path.
//
// kubeadm runs as a oneshot systemd service, not as a child of the SSH
// session: an apply that is killed, loses its connection or is stopped with
// Ctrl-C in the middle of a join leaves kubeadm to finish on the host, where
// a half-done init or join would need a reset, and the next apply waits for
// it (scriptKubeadmRunning) instead of starting a second one. The unit lives
// in /run (gone at the next boot); systemctl start waits for a oneshot to
// end and fails when it fails, over systemd's own socket (no D-Bus needed,
// unlike systemd-run). Its output goes to a file, printed when it ends, so
// a broken pipe cannot kill it; the file is root's alone (0600), since
// kubeadm prints the join command with its secrets. command is kubeadm's
// words (no quoting).
func scriptKubeadm(command string) string {
	log := shellQuote(plan.KubeadmLogPath)
	unit := "[Unit]\nDescription=kprov: " + command + "\n\n[Service]\nType=oneshot\n" +
		"Environment=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nUMask=0077\n" +
		"ExecStart=/usr/bin/env " + command + "\n" +
		"StandardOutput=file:" + plan.KubeadmLogPath + "\nStandardError=inherit\n"
	return "mkdir -p " + shellQuote(filepath.Dir(plan.KubeadmLogPath)) + " " + shellQuote(filepath.Dir(plan.KubeadmUnitPath)) +
		" && rm -f " + log + " && (umask 077 && : >" + log + ") && printf '%s' " + shellQuote(unit) + " > " + shellQuote(plan.KubeadmUnitPath) +
		" && systemctl daemon-reload && systemctl start " + plan.KubeadmUnit + "; rc=$?; cat " + log + " 2>/dev/null; exit $rc"
}

// scriptKubeadmRunning prints "running" while a kubeadm that an earlier
// apply started (scriptKubeadm) is still at work: a oneshot service is
// "activating" until its command ends.
const scriptKubeadmRunning = `if [ "$(systemctl show -p ActiveState --value ` + plan.KubeadmUnit + ` 2>/dev/null)" = activating ]; then echo running; fi`

// scriptCreateBootstrapToken creates a bootstrap token on the cluster from
// a master, with the usages, groups and description of the one kubeadm init
// creates (templates/kubeadm-init.yaml.tmpl). kubeadm token create refuses
// an ID that exists, so a token with the same ID (left by an interrupted
// run) is deleted first, which also starts its TTL afresh. The token is on
// the command line, where kubeadm reads it; kubeadm prints it on stdout,
// which is discarded. The existence check names the token's public ID only.
func scriptCreateBootstrapToken(id, token string, ttl time.Duration) string {
	return binPath + "if " + strings.TrimPrefix(kubectl, binPath) + "-n kube-system get secret " + shellQuote("bootstrap-token-"+id) + " -o name --request-timeout=20s >/dev/null 2>&1; " +
		"then kubeadm token delete " + shellQuote(id) + "; fi && " +
		"kubeadm token create " + shellQuote(token) + " --ttl " + ttl.String() +
		" --description 'kprov bootstrap token' --usages signing,authentication --groups system:bootstrappers:kubeadm:default-node-token >/dev/null"
}

// scriptUploadCerts uploads the control-plane certificates into the
// kubeadm-certs Secret, encrypted with the certificate key of the init
// configuration at config; kubeadm deletes them two hours later. The key is
// never printed: --skip-certificate-key-print, and stdout is discarded.
func scriptUploadCerts(config string) string {
	return binPath + "kubeadm init phase upload-certs --upload-certs --skip-certificate-key-print --config " + shellQuote(config) + " >/dev/null"
}

// kubectl is kubectl with the admin kubeconfig of a master.
const kubectl = binPath + "kubectl --kubeconfig " + plan.AdminKubeconfigPath + " "

// scriptListNodes lists the cluster's nodes from a master, read-only.
const scriptListNodes = kubectl + "get nodes -o json --request-timeout=20s"

// scriptNodeReady prints the node's Ready condition (True, False,
// Unknown), or nothing while the node has not registered.
func scriptNodeReady(node string) string {
	return kubectl + "get node " + shellQuote(node) + ` --request-timeout=20s --ignore-not-found -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}'`
}

// scriptLabelNode sets a node's labels; --overwrite makes it idempotent.
func scriptLabelNode(node string, labels map[string]string) string {
	var args []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		args = append(args, shellQuote(k+"="+labels[k]))
	}
	return kubectl + "label node " + shellQuote(node) + " --overwrite " + strings.Join(args, " ")
}

// scriptDeleteNode deletes a Node object, for kprov restore: the restored
// etcd still lists the old cluster's nodes, and one whose host is not in the
// new inventory never comes back. --ignore-not-found makes it idempotent.
func scriptDeleteNode(node string) string {
	return kubectl + "delete node --ignore-not-found " + shellQuote(node)
}

// nodeGone is what scriptDrainNode prints when the node is already gone.
const nodeGone = "node already gone"

// drainTimeout bounds kubectl drain: pods whose PodDisruptionBudget allows
// no eviction are retried every 5 s until then, and the failure names them.
const drainTimeout = 5 * time.Minute

// scriptDrainNode cordons a node and evicts its pods through the eviction
// API, so PodDisruptionBudgets are respected. DaemonSet pods stay (their
// controller would put them back), emptyDir data goes with its pod, and a
// pod without a controller stops the drain instead of being deleted for
// good (no --force). A node already gone is done.
func scriptDrainNode(node string) string {
	q := shellQuote(node)
	return "n=$(" + kubectl + "get node " + q + " --request-timeout=20s --ignore-not-found -o name) || exit $?\n" +
		"[ -n \"$n\" ] || { echo " + shellQuote(nodeGone) + "; exit 0; }\n" +
		kubectl + "drain " + q + " --ignore-daemonsets --delete-emptydir-data --timeout=" + drainTimeout.String() + " 2>&1"
}

// scriptTaintNode sets a node's taints; --overwrite makes it idempotent.
func scriptTaintNode(node string, taints []string) string {
	return kubectl + "taint node " + shellQuote(node) + " --overwrite " + shell.Join(taints...)
}

// lockAge prints the seconds since the lock file was last refreshed, by
// the lock host's own clock.
const lockAge = `$(( $(date +%%s) - $(stat -c %%Y %[1]s 2>/dev/null || date +%%s) ))`

// scriptLockAcquire creates the lock file unless it exists. noclobber makes
// the shell open it with O_EXCL, so of two applies racing exactly one wins;
// the loser prints "held", the lock's age in seconds, and the holder's line.
func scriptLockAcquire(lockPath, owner string) string {
	return fmt.Sprintf("mkdir -p %[3]s && if (set -o noclobber; printf '%%s\\n' %[2]s > %[1]s) 2>/dev/null; then echo acquired; else echo \"held "+lockAge+"\"; cat %[1]s; fi",
		shellQuote(lockPath), shellQuote(owner), shellQuote(path.Dir(lockPath)))
}

// scriptLockBreakStale removes the lock only while it still names the
// holder that was seen and is still older than staleAfter, so a lock that
// was refreshed or taken over in between is left alone.
func scriptLockBreakStale(lockPath, holder string, staleAfter time.Duration) string {
	return fmt.Sprintf(`if [ "$(cat %[1]s 2>/dev/null)" = %[2]s ] && [ "`+lockAge+`" -ge %[3]d ]; then rm -f %[1]s && echo broken; fi`,
		shellQuote(lockPath), shellQuote(holder), int64(staleAfter/time.Second))
}

// scriptLockRefresh is the holder's heartbeat: it touches the lock while
// the lock is still its own, and says "lost" otherwise.
func scriptLockRefresh(lockPath, owner string) string {
	return fmt.Sprintf(`if [ "$(cat %[1]s 2>/dev/null)" = %[2]s ]; then touch %[1]s && echo ok; else echo lost; fi`, shellQuote(lockPath), shellQuote(owner))
}

// scriptLockRelease removes the lock only while it is still this run's,
// and then the lock's directory if nothing else is in it, so an apply that
// changed nothing (refused, or no changes) leaves the host as it was.
func scriptLockRelease(lockPath, owner string) string {
	return fmt.Sprintf(`if [ "$(cat %[1]s 2>/dev/null)" = %[2]s ]; then rm -f %[1]s; rmdir %[3]s 2>/dev/null || :; fi`, shellQuote(lockPath), shellQuote(owner), shellQuote(path.Dir(lockPath)))
}

// kubeadmStatePresent is true (exit 0) when kubeadm has state on the host
// that kubeadm reset undoes: a join or init result, a join cut short, or a
// running kubelet.
var kubeadmStatePresent = `[ -e ` + plan.KubeletConfPath + ` ] || [ -e ` + plan.BootstrapKubeletConfPath + ` ] || [ -e ` + plan.APIServerManifestPath +
	` ] || [ -e ` + plan.KubeletConfigPath + ` ] || systemctl is-active --quiet kubelet`

// scriptKubeadmReset runs kubeadm reset with the planner's words (kubeadm
// reset -f, perhaps --skip-phases remove-etcd-member) while kubeadm has
// state on the host; its output goes to stderr, so only "changed" is on
// stdout. kubeadm empties its directories but leaves them: the ones left
// empty are removed.
func scriptKubeadmReset(command string) string {
	return binPath + "if " + kubeadmStatePresent + "; then " + command + " >&2 && echo changed || exit $?; " +
		"rmdir -- /etc/kubernetes/manifests /var/lib/kubelet 2>/dev/null; fi; exit 0"
}

// scriptRemoveImages removes from containerd's k8s.io namespace each image
// of want ("REF sha256:DIGEST") that containerd lists with that digest,
// and no other.
func scriptRemoveImages(want []plan.ImageRef) string {
	var wants []string
	for _, r := range want {
		wants = append(wants, shellQuote(r.Ref+" "+r.Digest))
	}
	ns := plan.ImagesK8sNamespace
	return binPath + `l=$(ctr -n ` + ns + ` images ls) || exit $?
n=0
for want in ` + strings.Join(wants, " ") + `; do
  if printf '%s\n' "$l" | awk 'NR > 1 && NF >= 3 {print $1 " " $3}' | grep -qxF -e "$want"; then ctr -n ` + ns + ` images rm "${want%% *}" >/dev/null || exit $?; n=$((n + 1)); fi
done
if [ "$n" -gt 0 ]; then echo changed; fi`
}

// scriptRemoveKprovFile removes one file kprov put on the host (or a symbolic
// link there: rm removes the link, never what it points to); with sum set,
// only while the file has that SHA-256 (a binary kprov installed, not one
// put there since). Then each of dirs (plan.EmptyDirsAbove) that is left
// empty goes; rmdir removes nothing else.
func scriptRemoveKprovFile(file, sum string, dirs []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "f=%s\nif [ -e \"$f\" ] || [ -L \"$f\" ]; then\n", shellQuote(file))
	if sum != "" {
		fmt.Fprintf(&b, "  s=$(sha256sum < \"$f\") || exit 1\n  if [ \"${s%%%% *}\" != %s ]; then echo \"$f has changed since kprov installed it: left in place\" >&2; else rm -f -- \"$f\" && echo changed || exit 1; fi\n", shellQuote(sum))
	} else {
		b.WriteString("  rm -f -- \"$f\" && echo changed || exit 1\n")
	}
	b.WriteString("fi\n")
	for _, d := range dirs {
		fmt.Fprintf(&b, "rmdir -- %s 2>/dev/null\n", shellQuote(d))
	}
	b.WriteString("exit 0")
	return b.String()
}

// scriptDeleteNodeIfPresent deletes a Node object that exists, saying
// "changed" only then.
func scriptDeleteNodeIfPresent(node string) string {
	n := shellQuote(node)
	return binPath + "if " + strings.TrimPrefix(kubectl, binPath) + "get node " + n + " --ignore-not-found -o name --request-timeout=20s | grep -q .; then " +
		strings.TrimPrefix(kubectl, binPath) + "delete node " + n + " --request-timeout=60s >/dev/null && echo changed; fi"
}
