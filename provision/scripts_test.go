package provision

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/roles"
)

// TestScriptsGolden writes every command kprov runs on a host, with sample
// arguments, into one golden file: a reviewer reads there, in one sitting,
// everything kprov can do to a host as root, and any change to a command
// shows up in review as a diff of that file.
func TestScriptsGolden(t *testing.T) {
	probe, err := hostProbe{Files: []string{"/etc/kprov/kubeadm-init.yaml", "/usr/local/bin/kubelet"}, EtcdConfig: "/etc/etcd/etcd.yaml",
		EtcdDataDir: "/var/lib/etcd", KubeletConf: "/etc/kubernetes/kubelet.conf", APIServerManifest: "/etc/kubernetes/manifests/kube-apiserver.yaml"}.script()
	if err != nil {
		t.Fatal(err)
	}
	scripts := []struct{ name, text string }{
		{"fact probe (read-only)", probe},
		{"preflight probe, etcd host", preflightScript([]string{"etcd", "etcdctl"}, "/var/lib/etcd")},
		{"preflight probe, node", preflightScript([]string{"kubeadm", "kubelet"}, "")},
		{"make upload directories", scriptMakeDirs([]string{"/etc/kprov", "/etc/etcd"})},
		{"start a unit", scriptStartService("etcd.service")},
		{"restart a unit", scriptRestartService("etcd.service")},
		{"stop a unit", scriptStopService("etcd.service")},
		{"wipe the etcd data directory", scriptWipeDataDir("/var/lib/etcd")},
		{"kubeadm already ran?", scriptExists("/etc/kubernetes/manifests/kube-apiserver.yaml")},
		{"kubeadm validate", scriptKubeadmValidate("/etc/kprov/kubeadm-join.yaml")},
		{"kubeadm", scriptKubeadm("kubeadm join --config /etc/kprov/kubeadm-join.yaml")},
		{"create the bootstrap token (the token is a placeholder here)", scriptCreateBootstrapToken("abcdef", roles.RedactedBootstrapToken, pki.BootstrapTokenTTL)},
		{"upload the control-plane certificates (the certificate key is in the configuration)", scriptUploadCerts("/etc/kprov/kubeadm-init.yaml")},
		{"list nodes (read-only)", scriptListNodes},
		{"label a node", scriptLabelNode("infra-1", map[string]string{"node-role.kubernetes.io/infra": "", "zone": "a"})},
		{"taint a node", scriptTaintNode("infra-1", []string{"node-role.kubernetes.io/infra=:NoSchedule"})},
		{"take the cluster lock", scriptLockAcquire("ops@laptop pid 42 since " + time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC).Format(time.RFC3339))},
		{"break the cluster lock", scriptLockBreak()},
		{"release the cluster lock", scriptLockRelease("ops@laptop pid 42 since 2026-12-01T12:00:00Z")},
	}
	var b bytes.Buffer
	b.WriteString("# Every command kprov runs on a host (provision/scripts.go), with sample arguments.\n")
	b.WriteString("# go test ./provision -run TestScriptsGolden -update rewrites this file.\n")
	for _, s := range scripts {
		fmt.Fprintf(&b, "\n## %s\n%s\n", s.name, s.text)
	}
	golden := filepath.Join("testdata", "scripts.golden")
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Errorf("%s differs (go test ./provision -run TestScriptsGolden -update rewrites it); got:\n%s", golden, b.Bytes())
	}
}
