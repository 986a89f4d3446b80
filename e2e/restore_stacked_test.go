//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/lab"
	"github.com/kprov/kprov/roles"
)

// TestRestoreStackedEtcd is a scripted disaster-recovery rebuild of a
// cluster with stacked etcd on lab machines (issue 14):
//
//   - a lab of one master (stacked etcd) and one worker is applied; 1,000
//     keys are written with etcd's client (kprov's client certificate,
//     straight to the master's member), and Kubernetes objects are made: a
//     ConfigMap, a ServiceAccount and a token for it, a Deployment;
//   - kprov backup takes an age-encrypted backup; the old admin.conf is kept;
//   - the lab is destroyed; a new one comes up with other names and three
//     masters (master-r1..3, compute-r1) on another subnet, its inventory
//     keeping the old name;
//   - a wrong age identity and a backup of another cluster are refused
//     before any host is touched (no state directory, nothing on the hosts);
//   - kprov restore is interrupted (Ctrl-C) once master-r1's member is
//     restored, as kubeadm init starts; run again, it continues without
//     restoring the member again and rebuilds the cluster: the snapshot
//     restored into master-r1's data directory, kubeadm init over it with
//     the same CAs;
//     master-r2 and master-r3 join its member one at a time; every key
//     reads back, the members are master-r1..3 alone, the revision is
//     above the snapshot's, the ConfigMap and Deployment are there, the old
//     admin.conf's client certificate and the old token are accepted, the
//     old Node objects are gone and the new nodes Ready;
//   - kprov status is healthy; kprov restore again restores nothing (the
//     serving member is never restored over); kprov apply prints No changes.
func TestRestoreStackedEtcd(t *testing.T) {
	runsBeside(t, true)
	specs := []lab.MachineSpec{
		{Name: "master-1", Roles: []inventory.Role{inventory.RoleMaster}},
		{Name: "compute-1", Roles: []inventory.Role{inventory.RoleCompute}},
	}
	old := upAppliedLab(t, specs)
	inv := old.InventoryPath()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	oldState := filepath.Join(filepath.Dir(inv), ".kprov", old.Name())

	cli := etcdClientState(t, ctx, old, oldState)
	writeRestoreKeys(t, ctx, cli)
	cli.Close()
	dir := t.TempDir()
	oldAdmin, err := os.ReadFile(filepath.Join(oldState, "admin.conf"))
	if err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(dir, "old-admin.conf")
	if err := os.WriteFile(kc, oldAdmin, 0o600); err != nil {
		t.Fatal(err)
	}
	images, err := roles.KubeadmImages(lab.DefaultKubernetesVersion, "")
	if err != nil {
		t.Fatal(err)
	}
	pause := images[slices.IndexFunc(images, func(s string) bool { return strings.Contains(s, "/pause:") })]
	kubectl(t, ctx, kc, "create", "configmap", "kprov-restore", "--from-literal=written=before-the-disaster")
	kubectl(t, ctx, kc, "create", "serviceaccount", "kprov-restore")
	token := strings.TrimSpace(string(kubectl(t, ctx, kc, "create", "token", "kprov-restore", "--duration=48h")))
	kubectl(t, ctx, kc, "create", "deployment", "kprov-restore", "--image="+pause, "--replicas=1")

	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	identity := filepath.Join(dir, "backup-identity.txt")
	if err := os.WriteFile(identity, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "lab.kprov-backup")
	start := time.Now()
	b, stderr, err := kprovJSON(t, "-f", inv, "backup", "-o", file, "--encrypt-to", id.Recipient().String(), "--json")
	if err != nil {
		t.Fatalf("backup: %v\n%s", err, stderr)
	}
	t.Logf("backup took %s: revision %d, %d keys, %d bytes, etcd mode %s", time.Since(start).Round(time.Millisecond), b.Manifest.Revision, b.Manifest.TotalKeys, b.Size, b.Manifest.EtcdMode)
	if b.Manifest.EtcdMode != string(inventory.EtcdStacked) || b.Manifest.Revision == 0 {
		t.Fatalf("backup manifest: %+v", b.Manifest)
	}

	// The disaster: every machine of the old lab is gone.
	cluster := old.Name()
	// The new cluster has three masters: master-r1 is restored, master-r2
	// and master-r3 join its member.
	newSpecs := append(slices.Clone(specs),
		lab.MachineSpec{Name: "master-2", Roles: []inventory.Role{inventory.RoleMaster}},
		lab.MachineSpec{Name: "master-3", Roles: []inventory.Role{inventory.RoleMaster}})
	l, newSubnet, newInv := afterDisaster(t, ctx, old, newSpecs)
	stateDir := filepath.Join(filepath.Dir(newInv), ".kprov", cluster)

	// Refused before any host is touched: a wrong identity, and a backup
	// of another cluster.
	before := hostListings(t, ctx, l)
	wrong, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	wrongFile := filepath.Join(dir, "wrong-identity.txt")
	if err := os.WriteFile(wrongFile, []byte(wrong.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := kprovErr(t, "-f", newInv, "restore", file, "--identity", wrongFile, "--auto-approve"); exitCode(err) != 1 || !strings.Contains(out, "no identity given matches") {
		t.Errorf("restore with a wrong identity: %v, want exit 1 saying no identity matches\n%s", err, out)
	}
	otherInv := sameClusterInventory(t, l, "other-cluster", "other.kprov.hcl")
	if out, err := kprovErr(t, "-f", otherInv, "restore", file, "--identity", identity, "--auto-approve"); exitCode(err) != 1 || !strings.Contains(out, fmt.Sprintf("the backup is of cluster %q, not %q", cluster, "other-cluster")) {
		t.Errorf("restore of another cluster's backup: %v\n%s", err, out)
	}
	for _, d := range []string{stateDir, filepath.Join(filepath.Dir(otherInv), ".kprov", "other-cluster")} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("a refused restore created state directory %s (%v)", d, err)
		}
	}
	if after := hostListings(t, ctx, l); after != before {
		t.Errorf("a refused restore touched the hosts:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// Interrupted (Ctrl-C) once master-r1's member is restored, as kubeadm
	// init starts on it: the run after it continues from there and never
	// restores that member again.
	run := startApplyUntil(t, ctx, "[control-plane] kubeadm init on master-r1", "-f", newInv, "restore", file, "--identity", identity, "--auto-approve")
	if err := run.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if first, err := run.wait(); err == nil {
		t.Logf("the interrupted restore finished before Ctrl-C reached it:\n%s", first)
	} else if !strings.Contains(first, "restoring the snapshot") {
		t.Errorf("the interrupted restore did not restore master-r1 first:\n%s", first)
	}
	marker, _ := l.Output(ctx, "master-r1", "cat /etc/kprov/etcd-restored; ls -A /var/lib/etcd; systemctl is-active kprov-kubeadm.service; true")
	t.Logf("master-r1 after the interrupted restore: %s", bytes.Join(bytes.Fields(marker), []byte(" ")))

	// The restore, run again.
	out := runRestore(t, "restore after the interruption", "-f", newInv, "restore", file, "--identity", identity, "--auto-approve")
	if strings.Contains(out, "restoring the snapshot") {
		t.Errorf("the run after the interruption restored master-r1 again:\n%s", out)
	}
	cli = etcdClientState(t, ctx, l, stateDir)
	defer cli.Close()
	assertRestoredKeys(t, ctx, cli, b.Manifest.Revision)
	list, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	prefix := strings.TrimSuffix(newSubnet.Addr().String(), ".0") + "."
	var names []string
	for _, m := range list.Members {
		names = append(names, m.Name)
		if m.IsLearner || !strings.HasPrefix(m.PeerURLs[0], "https://"+prefix) {
			t.Errorf("member %s: learner %v, peer URLs %v; want a voter on %s", m.Name, m.IsLearner, m.PeerURLs, newSubnet)
		}
	}
	slices.Sort(names)
	if strings.Join(names, ",") != "master-r1,master-r2,master-r3" {
		t.Errorf("members %v, want master-r1..3 alone", names)
	}

	// Credentials issued before the disaster: the old admin.conf's client
	// certificate and the ServiceAccount token, against the new API server.
	addr := l.Machines()[0].Address.String()
	for _, m := range l.Machines() {
		if m.Name == "master-r1" {
			addr = m.Address.String()
		}
	}
	server := "https://" + addr + ":6443"
	oldKC := filepath.Join(dir, "old-admin-new-server.conf")
	if err := os.WriteFile(oldKC, regexp.MustCompile(`(?m)^(\s*server:).*$`).ReplaceAll(oldAdmin, []byte("${1} "+server)), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := string(kubectl(t, ctx, oldKC, "get", "configmap", "kprov-restore", "-o", "jsonpath={.data.written}")); got != "before-the-disaster" {
		t.Errorf("ConfigMap read with the old admin.conf: %q", got)
	}
	if got := string(kubectl(t, ctx, oldKC, "get", "deployment", "kprov-restore", "-o", "name")); strings.TrimSpace(got) != "deployment.apps/kprov-restore" {
		t.Errorf("Deployment after the restore: %q", got)
	}
	ca := regexp.MustCompile(`certificate-authority-data:\s*(\S+)`).FindSubmatch(oldAdmin)
	if ca == nil {
		t.Fatal("no certificate-authority-data in the old admin.conf")
	}
	tokenKC := filepath.Join(dir, "token.conf")
	tokenConf := fmt.Sprintf("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: %s\n    certificate-authority-data: %s\nusers:\n- name: u\n  user:\n    token: %s\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n", server, ca[1], token)
	if err := os.WriteFile(tokenKC, []byte(tokenConf), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := string(kubectl(t, ctx, tokenKC, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")); got != "system:serviceaccount:default:kprov-restore" {
		t.Errorf("the pre-disaster token authenticates as %q", got)
	}

	// Only the new nodes, Ready; kprov status healthy.
	newKC := filepath.Join(stateDir, "admin.conf")
	newNodes := []string{"master-r1", "master-r2", "master-r3", "compute-r1"}
	assertNodesReady(t, ctx, newKC, newNodes)
	status := statusHealthy(t, ctx, newInv, 3*time.Minute)
	if !strings.Contains(status, "etcd: 3 voting, quorum 2, 3 healthy") {
		t.Errorf("kprov status after the restore:\n%s", status)
	}
	for _, m := range newNodes {
		if !regexp.MustCompile(`(?m)^` + m + ` .*node Ready`).MatchString(status) {
			t.Errorf("kprov status does not show %s Ready:\n%s", m, status)
		}
	}

	// Run again: the member that serves is never restored over.
	out = runRestore(t, "second restore", "-f", newInv, "restore", file, "--identity", identity, "--auto-approve")
	if strings.Contains(out, "restoring the snapshot") {
		t.Errorf("the second restore restored again:\n%s", out)
	}
	again, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids := func(r *clientv3.MemberListResponse) []uint64 {
		var out []uint64
		for _, m := range r.Members {
			out = append(out, m.ID)
		}
		slices.Sort(out)
		return out
	}
	if !slices.Equal(ids(list), ids(again)) || again.Header.ClusterId != list.Header.ClusterId {
		t.Errorf("members changed by the second restore: %v, then %v", list.Members, again.Members)
	}
	out = kprov(t, "-f", newInv, "apply", "--auto-approve")
	if !strings.Contains(out, "No changes.") {
		t.Errorf("apply after the restore:\n%s", out)
	}
}

// hostListings lists, on every machine of the lab, what kprov or kubeadm
// would leave: a refused restore must change none of it.
func hostListings(t *testing.T, ctx context.Context, l *lab.Lab) string {
	t.Helper()
	var b bytes.Buffer
	for _, m := range l.Machines() {
		out, err := l.Output(ctx, m.Name, "ls -A /etc/kprov /var/lib/kprov /var/lib/etcd /etc/kubernetes /usr/local/bin 2>&1; true")
		if err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
		fmt.Fprintf(&b, "%s:\n%s\n", m.Name, out)
	}
	return b.String()
}
