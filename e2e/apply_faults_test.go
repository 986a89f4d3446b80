//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/lab"
)

// faultSpecs is the smallest external-etcd lab the fault tests need: three
// etcd members (so a learner joins twice), one master that holds the lock and
// runs kubeadm init, and one compute node to stop.
func faultSpecs() []lab.MachineSpec {
	return []lab.MachineSpec{
		{Name: "etcd-1", Roles: []inventory.Role{inventory.RoleEtcd}},
		{Name: "etcd-2", Roles: []inventory.Role{inventory.RoleEtcd}},
		{Name: "etcd-3", Roles: []inventory.Role{inventory.RoleEtcd}},
		{Name: "master-1", Roles: []inventory.Role{inventory.RoleMaster}},
		{Name: "compute-1", Roles: []inventory.Role{inventory.RoleCompute}},
	}
}

// upFaultLab boots faultSpecs and returns it with its inventory, checked to
// push the cached artifacts, and a context that bounds the test.
func upFaultLab(t *testing.T, timeout time.Duration) (*lab.Lab, string, context.Context) {
	t.Helper()
	l := UpLab(t, faultSpecs())
	inv := l.InventoryPath()
	if b, err := os.ReadFile(inv); err != nil || !strings.Contains(string(b), "artifacts {") {
		t.Fatalf("the lab's inventory has no artifacts block (is the artifact cache warm? kprov lab artifacts): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return l, inv, ctx
}

// kprovPaths are what an apply leaves on a host, whatever its role: the
// rendered files, the PKI, the binaries, the units, etcd's data and the lock.
var kprovPaths = []string{
	"/etc/kprov", "/etc/etcd", "/etc/kubernetes", "/var/lib/kprov", "/var/lib/etcd",
	"/usr/local/bin/etcd", "/usr/local/bin/kubeadm", "/usr/local/bin/kubelet",
	"/etc/systemd/system/etcd.service", "/etc/systemd/system/kprov-swapoff.service",
	"/etc/sysctl.d/99-kprov-kubernetes.conf", "/etc/modules-load.d/kprov-kubernetes.conf",
	"/etc/containerd/config.toml",
}

// assertUntouched checks that no running machine of the lab holds anything
// an apply writes: the refused run changed nothing. Machines in stopped are
// skipped (they cannot be asked).
func assertUntouched(t *testing.T, ctx context.Context, l *lab.Lab, stopped ...string) {
	t.Helper()
	for _, m := range l.Machines() {
		if slices.Contains(stopped, m.Name) {
			continue
		}
		out, err := l.Output(ctx, m.Name, "ls -d "+strings.Join(kprovPaths, " ")+" 2>/dev/null; true")
		if err != nil {
			t.Errorf("%s: %v", m.Name, err)
			continue
		}
		if s := strings.TrimSpace(string(out)); s != "" {
			t.Errorf("%s was changed by a refused apply: %s", m.Name, strings.ReplaceAll(s, "\n", " "))
		}
	}
}

// applyRun is a kprov apply running in the background, its stdout read
// line by line so a test can act at a chosen point of the run.
type applyRun struct {
	cmd    *exec.Cmd
	sc     *bufio.Scanner
	stdout strings.Builder
	stderr strings.Builder
}

// startApplyUntil starts kprov with args and reads its stdout up to a line
// starting with prefix; the test fails if the run ends first.
func startApplyUntil(t *testing.T, ctx context.Context, prefix string, args ...string) *applyRun {
	t.Helper()
	r := startApply(t, ctx, args...)
	if !r.waitLine(prefix) {
		out, err := r.wait()
		t.Fatalf("kprov ended before printing %q: %v\n%s", prefix, err, out)
	}
	return r
}

// startApply starts kprov with args, its stdout read line by line by the
// run's wait methods.
func startApply(t *testing.T, ctx context.Context, args ...string) *applyRun {
	t.Helper()
	r := &applyRun{cmd: exec.CommandContext(ctx, kprovBin, args...)}
	stdout, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r.cmd.Stderr = &r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.sc = bufio.NewScanner(stdout)
	return r
}

// waitLine reads stdout up to a line starting with prefix; false if the run
// ended first.
func (r *applyRun) waitLine(prefix string) bool {
	return r.waitFor(func(line string) bool { return strings.HasPrefix(line, prefix) })
}

// waitFor reads stdout up to a line match accepts; false if the run ended
// first.
func (r *applyRun) waitFor(match func(string) bool) bool {
	for r.sc.Scan() {
		line := r.sc.Text()
		r.stdout.WriteString(line + "\n")
		if match(line) {
			return true
		}
	}
	return false
}

// wait reads the rest of stdout, waits for the run to end, and returns
// its whole output (stdout, then stderr).
func (r *applyRun) wait() (string, error) {
	r.waitLine("\x00never")
	err := r.cmd.Wait()
	return r.stdout.String() + r.stderr.String(), err
}

// waitMembers polls etcd (with its own client, not kprov's) until it lists n
// members, and returns their IDs.
func waitMembers(t *testing.T, ctx context.Context, l *lab.Lab, inv string, n int) []uint64 {
	t.Helper()
	cli := etcdClient(t, ctx, l, inv)
	defer cli.Close()
	for ctx.Err() == nil {
		list, err := cli.MemberList(ctx)
		if err == nil && len(list.Members) == n {
			var ids []uint64
			for _, m := range list.Members {
				ids = append(ids, m.ID)
			}
			return ids
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("etcd never listed %d members: %v", n, ctx.Err())
	return nil
}

// exitCode is the process's exit code, or -1 when it did not exit normally.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}

// failureLine is kprov's final error line in out.
func failureLine(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "kprov: ") {
			return line
		}
	}
	return "(no error line)"
}

// addSudoUser creates the login user ops on a machine, authorized with the
// lab key, with a password and the given sudoers rule.
func addSudoUser(t *testing.T, ctx context.Context, l *lab.Lab, machine, rule string) {
	t.Helper()
	script := fmt.Sprintf(`set -e
id ops >/dev/null 2>&1 || useradd -m -s /bin/sh ops
echo ops:kprov-e2e-password | chpasswd
install -d -m 0700 -o ops -g ops /home/ops/.ssh
install -m 0600 -o ops -g ops /root/.ssh/authorized_keys /home/ops/.ssh/authorized_keys
echo %q >/etc/sudoers.d/ops
chmod 0440 /etc/sudoers.d/ops
visudo -cqf /etc/sudoers.d/ops`, rule)
	if out, err := l.Output(ctx, machine, script); err != nil {
		t.Fatalf("%s: add user ops: %v\n%s", machine, err, out)
	}
}

// sshInventory writes, beside the lab's inventory (sharing its state
// directory), a copy named name.kprov.hcl in which the given hosts have an
// ssh block setting attr to value.
func sshInventory(t *testing.T, inv, name, attr, value string, hosts ...string) string {
	t.Helper()
	src, err := os.ReadFile(inv)
	if err != nil {
		t.Fatal(err)
	}
	text := string(src)
	for _, h := range hosts {
		head := fmt.Sprintf("host %q {\n", h)
		i := strings.Index(text, head)
		if i < 0 {
			t.Fatalf("no host %s in %s", h, inv)
		}
		end := i + strings.Index(text[i:], "\n}\n")
		text = text[:end] + fmt.Sprintf("\n  ssh {\n    %s = %q\n  }", attr, value) + text[end:]
	}
	path := filepath.Join(filepath.Dir(inv), name+".kprov.hcl")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestApplySudo logs in as a user other than root on etcd-1 and master-1:
//
//   - with a sudoers rule that wants a password, apply fails at once (sudo
//     -n), naming both hosts and the sudoers line that fixes it, and nothing
//     is changed on any host;
//   - with NOPASSWD, the same user applies: commands run through sudo -n,
//     uploads go through sudo's sftp-server and land owned by root with their
//     modes (secrets 0600), the lock is taken and released on master-1
//     through sudo, etcd forms, and the run converges.
func TestApplySudo(t *testing.T) {
	l, inv, ctx := upFaultLab(t, 5*time.Minute)
	sudoHosts := []string{"etcd-1", "master-1"}
	for _, h := range sudoHosts {
		addSudoUser(t, ctx, l, h, "ops ALL=(ALL) ALL")
	}
	opsInv := sshInventory(t, inv, "ops", "user", "ops", sudoHosts...)

	out, err := kprovErr(t, "-f", opsInv, "apply", "--auto-approve")
	if exitCode(err) < 1 {
		t.Fatalf("apply as ops with a password-protected sudo: %v\n%s", err, out)
	}
	for _, h := range sudoHosts {
		fix := regexp.MustCompile(h + `: .*user "ops" cannot run "sudo -n true".*visudo -f /etc/sudoers\.d/kprov.*"ops ALL=\(ALL\) NOPASSWD: ALL"`)
		if !fix.MatchString(out) {
			t.Errorf("the failure does not name %s with the sudoers fix:\n%s", h, out)
		}
	}
	assertUntouched(t, ctx, l)

	for _, h := range sudoHosts {
		addSudoUser(t, ctx, l, h, "ops ALL=(ALL) NOPASSWD: ALL")
	}
	out, err = kprovErr(t, "-f", opsInv, "apply", "--auto-approve")
	assertApplied(t, out, err)
	checkEtcd(t, ctx, l, inv)
	for path, want := range map[string]string{
		"/etc/kubernetes/pki/etcd/server.key": "root:root 600",
		"/etc/kubernetes/pki/etcd/server.crt": "root:root 644",
		"/etc/etcd/etcd.yaml":                 "root:root 644",
		"/usr/local/bin/etcd":                 "root:root 755",
	} {
		got, err := l.Output(ctx, "etcd-1", "stat -c '%U:%G %a' "+path)
		if err != nil || strings.TrimSpace(string(got)) != want {
			t.Errorf("etcd-1:%s uploaded through sudo: %q, %v; want %s", path, got, err, want)
		}
	}
	// The lock is gone; kubeadm's output stays for whoever looks into a
	// failure, as root's alone; no image archive is left behind.
	if got, err := l.Output(ctx, "master-1", "stat -c '%U:%G %a' /etc/kprov/kubeadm-init.yaml /var/lib/kprov/kubeadm.log; ls -A /var/lib/kprov /var/lib/kprov/images"); err != nil ||
		!strings.HasPrefix(string(got), "root:root 600\nroot:root 600\n") || strings.Contains(string(got), "apply.lock") || strings.Contains(string(got), ".tar") {
		t.Errorf("master-1: kubeadm config, kubeadm log and /var/lib/kprov after a sudo apply: %q, %v", got, err)
	}
}

// TestApplyInterrupted sends SIGINT (Ctrl-C) to an apply once etcd lists
// etcd-2 (added as a learner): kprov stops promptly with exit 1 and
// releases the cluster lock, so the next apply
// needs no --break-lock; that apply converges without adding etcd-2 again,
// and the members etcd had at the interruption keep their IDs.
func TestApplyInterrupted(t *testing.T) {
	l, inv, ctx := upFaultLab(t, 5*time.Minute)

	run := startApplyUntil(t, ctx, "[etcd] adding member 2/3 (etcd-2) ...", "-f", inv, "apply", "--auto-approve")
	before := waitMembers(t, ctx, l, inv, 2)
	if err := run.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	interrupted := time.Now()
	out, err := run.wait()
	took := time.Since(interrupted)
	t.Logf("apply exited %s after SIGINT: %s", took.Round(time.Millisecond), failureLine(out))
	if exitCode(err) != 1 {
		t.Errorf("interrupted apply: %v, want exit 1\n%s", err, out)
	}
	if took > 20*time.Second {
		t.Errorf("apply took %s to stop after SIGINT", took)
	}
	if !strings.Contains(out, "context canceled") || strings.Contains(out, "cluster lock not released") {
		t.Errorf("interrupted apply output:\n%s", out)
	}
	if got, err := l.Output(ctx, "master-1", "if [ -e /var/lib/kprov ]; then ls -A /var/lib/kprov; fi"); err != nil || strings.TrimSpace(string(got)) != "" {
		t.Errorf("master-1 after Ctrl-C: /var/lib/kprov holds %q (%v), want no lock", got, err)
	}

	out, err = kprovErr(t, "-f", inv, "apply", "--auto-approve")
	assertApplied(t, out, err)
	if strings.Contains(out, "etcd learner added member=etcd-2") {
		t.Errorf("the apply after Ctrl-C added etcd-2 again:\n%s", out)
	}
	after := checkEtcd(t, ctx, l, inv)
	for _, id := range before {
		if !slices.Contains(after, id) {
			t.Errorf("member %x listed at the interruption is gone: %x then %x", id, before, after)
		}
	}
}

// TestApplyMachineStopped pulls the plug on etcd-2 right after etcd-1
// started as a new cluster, before etcd-2 joins: apply fails naming etcd-2,
// the step and the stage; once etcd-2 is booted again, the next apply
// converges to three voting members.
func TestApplyMachineStopped(t *testing.T) {
	l, inv, ctx := upFaultLab(t, 6*time.Minute)

	run := startApplyUntil(t, ctx, "[etcd] starting member 1/3 (etcd-1) as a new cluster: done", "-f", inv, "apply", "--auto-approve")
	if err := l.Stop(ctx, "etcd-2", 0); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	out, err := run.wait()
	t.Logf("apply failed %s after etcd-2 stopped: %s", time.Since(stopped).Round(time.Millisecond), failureLine(out))
	if exitCode(err) != 1 || !strings.Contains(out, "apply failed on etcd-2 at ") || !strings.Contains(out, "(stage etcd/add/etcd-2)") {
		t.Fatalf("apply with etcd-2 stopped halfway: %v, want exit 1 naming etcd-2 and its step\n%s", err, out)
	}

	if err := l.Start(ctx, "etcd-2", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	out, err = kprovErr(t, "-f", inv, "apply", "--auto-approve")
	assertApplied(t, out, err)
	checkEtcd(t, ctx, l, inv)
}

// TestApplySavedPlan saves a plan, changes a file kprov manages on one host,
// and checks apply refuses the plan (naming why) and changes nothing; with
// the file put back, the same saved plan applies.
func TestApplySavedPlan(t *testing.T) {
	l, inv, ctx := upFaultLab(t, 5*time.Minute)
	planFile := filepath.Join(t.TempDir(), "p.json")
	kprov(t, "-f", inv, "plan", "--out", planFile)

	const managed = "/etc/modules-load.d/kprov-kubernetes.conf"
	if out, err := l.Output(ctx, "compute-1", "echo overlay >"+managed); err != nil {
		t.Fatalf("compute-1: %v\n%s", err, out)
	}
	out, err := kprovErr(t, "-f", inv, "apply", planFile, "--auto-approve")
	if exitCode(err) != 1 || !strings.Contains(out, "the hosts changed since the plan was saved (compute-1: file "+managed+")") {
		t.Errorf("apply of a saved plan after compute-1 changed: %v\n%s", err, out)
	}
	if strings.Contains(out, "[prepare]") {
		t.Errorf("a refused saved plan ran a stage:\n%s", out)
	}
	if _, err := l.Output(ctx, "compute-1", "rm "+managed); err != nil {
		t.Fatal(err)
	}
	assertUntouched(t, ctx, l)

	out, err = kprovErr(t, "-f", inv, "apply", planFile, "--auto-approve")
	assertApplied(t, out, err)
	checkEtcd(t, ctx, l, inv)
}

// TestApplyPreflightAllProblems stops compute-1 and has something else
// listen on etcd-2's client port and master-1's API server port: apply's
// preflight lists all three problems in one failure, shows no plan, and
// changes nothing.
func TestApplyPreflightAllProblems(t *testing.T) {
	l, inv, ctx := upFaultLab(t, 3*time.Minute)
	if err := l.Stop(ctx, "compute-1", 0); err != nil {
		t.Fatal(err)
	}
	occupy(t, ctx, l, "etcd-2", 2379)
	occupy(t, ctx, l, "master-1", 6443)

	// A short connect timeout for the stopped machine keeps the test short:
	// kprov still tries it several times before calling it unreachable.
	inv = sshInventory(t, inv, "timeout", "connect_timeout", "1s", "compute-1")
	start := time.Now()
	out, err := kprovErr(t, "-f", inv, "apply", "--auto-approve")
	t.Logf("preflight refused in %s", time.Since(start).Round(time.Millisecond))
	if exitCode(err) != 1 {
		t.Errorf("apply: %v, want exit 1", err)
	}
	for _, want := range []string{
		"preflight found 3 problem(s):",
		"compute-1: reachable: ",
		"etcd-2: ports: port 2379 is already in use",
		"master-1: ports: port 6443 is already in use",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("apply output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "Stages, in order") {
		t.Errorf("a plan was shown despite the preflight problems:\n%s", out)
	}
	assertUntouched(t, ctx, l, "compute-1")
}

// occupy makes a process other than etcd or the API server listen on a TCP
// port of a machine, as a stray service would: systemd-socket-activate
// holds the listening socket (the base system has no nc or python).
func occupy(t *testing.T, ctx context.Context, l *lab.Lab, machine string, port int) {
	t.Helper()
	cmd := fmt.Sprintf("systemd-run --unit=kprov-e2e-squat-%[1]d systemd-socket-activate -l %[1]d sleep infinity && for i in $(seq 50); do ss -Hltn | grep -q ':%[1]d ' && exit 0; sleep 0.1; done; exit 1", port)
	if out, err := l.Output(ctx, machine, cmd); err != nil {
		t.Fatalf("%s: occupy port %d: %v\n%s", machine, port, err, out)
	}
}
