//go:build e2e

// Package e2e runs kprov against lab machines: real systemd, real sshd.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/charmbracelet/log"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/kprov/kprov/lab"
)

// kprovBin is the kprov binary built once for the whole run.
var kprovBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kprov-e2e-bin")
	if err != nil {
		panic(err)
	}
	kprovBin = filepath.Join(dir, "kprov")
	build := exec.Command("go", "build", "-o", kprovBin, "github.com/kprov/kprov/cmd/kprov")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		panic("build kprov: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// kprov runs the kprov binary and fails the test if it fails.
func kprov(t *testing.T, args ...string) string {
	t.Helper()
	out, err := kprovErr(t, args...)
	if err != nil {
		t.Fatalf("kprov %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func kprovErr(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(kprovBin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// testLab is one lab for a test, with its own name and directory, always torn down.
type testLab struct {
	name, dir string
}

func newTestLab(t *testing.T) *testLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the lab e2e tests need root (and scripts/setup)")
	}
	suffix := make([]byte, 3)
	rand.Read(suffix)
	tl := &testLab{name: "e2e-" + hex.EncodeToString(suffix), dir: filepath.Join(t.TempDir(), "lab")}
	t.Cleanup(func() {
		if out, err := kprovErr(t, tl.flags("lab", "down")...); err != nil {
			t.Errorf("lab down: %v\n%s", err, out)
		}
	})
	return tl
}

// flags appends the lab's --name and --dir (and a cache override from KPROV_LAB_CACHE) to args.
func (tl *testLab) flags(args ...string) []string {
	return append(args, "--name", tl.name, "--dir", tl.dir)
}

func (tl *testLab) up(t *testing.T, extra ...string) *lab.Lab {
	t.Helper()
	args := tl.flags("lab", "up")
	if c := os.Getenv("KPROV_LAB_CACHE"); c != "" {
		args = append(args, "--cache", c)
	}
	kprov(t, append(args, extra...)...)
	l, err := lab.Open(tl.dir, log.New(os.Stderr))
	if err != nil {
		t.Fatal(err)
	}
	// The inventory the lab writes is one kprov accepts as it is.
	if out := kprov(t, "validate", "-f", l.InventoryPath()); !strings.Contains(out, "topology: ") {
		t.Fatalf("kprov validate of the lab inventory printed no topology:\n%s", out)
	}
	return l
}

// sshProbe connects to a machine with strict host key checking and returns
// the host key it presented and its hostname.
func sshProbe(ctx context.Context, l *lab.Lab, m lab.MachineState, timeout time.Duration) (ssh.PublicKey, string, error) {
	signerPEM, err := os.ReadFile(l.IdentityPath())
	if err != nil {
		return nil, "", err
	}
	signer, err := ssh.ParsePrivateKey(signerPEM)
	if err != nil {
		return nil, "", err
	}
	check, err := knownhosts.New(l.KnownHostsPath())
	if err != nil {
		return nil, "", err
	}
	var presented ssh.PublicKey
	cfg := &ssh.ClientConfig{
		User: "root",
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: func(host string, remote net.Addr, key ssh.PublicKey) error {
			presented = key
			return check(host, remote, key)
		},
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
		Timeout:           timeout,
	}
	addr := net.JoinHostPort(m.Address.String(), "22")
	conn, err := (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, "", err
	}
	conn.SetDeadline(time.Now().Add(timeout))
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		conn.Close()
		return presented, "", err
	}
	client := ssh.NewClient(c, chans, reqs)
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return presented, "", err
	}
	defer sess.Close()
	out, err := sess.Output("hostname")
	return presented, strings.TrimSpace(string(out)), err
}

// waitAnswers polls until the machine answers SSH, or fails the test after a minute.
func waitAnswers(t *testing.T, l *lab.Lab, m lab.MachineState) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := l.WaitSSH(ctx, m.Name); err != nil {
		t.Fatalf("%s does not answer: %v", m.Name, err)
	}
}

// assertSilent checks that a machine does not answer SSH within a few seconds.
func assertSilent(t *testing.T, l *lab.Lab, m lab.MachineState) {
	t.Helper()
	if _, host, err := sshProbe(context.Background(), l, m, 3*time.Second); err == nil {
		t.Fatalf("%s still answers SSH (as %q)", m.Name, host)
	}
}

func TestLab(t *testing.T) {
	tl := newTestLab(t)
	hostBefore := hostKernelSettings(t)
	start := time.Now()
	l := tl.up(t, "--machines", "3")
	t.Logf("3-machine lab up in %s", time.Since(start).Round(time.Millisecond))
	machines := l.Machines()
	if len(machines) != 3 {
		t.Fatalf("lab has %d machines, want 3", len(machines))
	}

	t.Run("machines can run kubelet and containers", func(t *testing.T) {
		for _, m := range machines {
			assertReadyForKubelet(t, tl, m)
		}
		assertHostSettings(t, hostBefore, "with the lab running")
	})

	t.Run("each machine answers with its own host key and hostname", func(t *testing.T) {
		seen := map[string]string{}
		for _, m := range machines {
			key, host, err := sshProbe(context.Background(), l, m, 10*time.Second)
			if err != nil {
				t.Fatalf("%s: %v", m.Name, err)
			}
			if host != m.Name {
				t.Errorf("%s answers with hostname %q", m.Name, host)
			}
			fp := ssh.FingerprintSHA256(key)
			if other, dup := seen[fp]; dup {
				t.Errorf("%s and %s share host key %s", m.Name, other, fp)
			}
			seen[fp] = m.Name
		}
	})

	t.Run("a second up reports the running lab", func(t *testing.T) {
		before := l.Machines()
		start := time.Now()
		again := tl.up(t, "--machines", "3")
		if took := time.Since(start); took > 15*time.Second {
			t.Errorf("second up took %s", took)
		}
		for i, m := range again.Machines() {
			if m.PID != before[i].PID || m.HostKey != before[i].HostKey {
				t.Errorf("%s was rebooted or rekeyed by the second up", m.Name)
			}
		}
		out := kprov(t, tl.flags("lab", "status")...)
		if strings.Count(out, "running  yes") != 3 {
			t.Errorf("status does not show three running machines:\n%s", out)
		}
	})

	t.Run("a stopped machine stops answering and comes back when started", func(t *testing.T) {
		m := machines[1]
		kprov(t, tl.flags("lab", "stop", m.Name)...)
		assertSilent(t, l, m)
		for _, d := range labCgroups(tl.name) {
			if strings.HasSuffix(d, "."+m.Name) {
				t.Errorf("stopped %s left cgroup %s", m.Name, d)
			}
		}
		waitAnswers(t, l, machines[0])
		kprov(t, tl.flags("lab", "start", m.Name)...)
		key, host, err := sshProbe(context.Background(), l, m, 10*time.Second)
		if err != nil || host != m.Name {
			t.Fatalf("%s after start: host %q, %v", m.Name, host, err)
		}
		if got := string(ssh.MarshalAuthorizedKey(key)); !strings.HasPrefix(m.HostKey, strings.TrimSpace(got)) {
			t.Errorf("%s came back with another host key", m.Name)
		}
		assertReadyForKubelet(t, tl, m)
	})

	t.Run("a cut machine is unreachable until restored", func(t *testing.T) {
		m := machines[2]
		kprov(t, tl.flags("lab", "cut", m.Name)...)
		assertSilent(t, l, m)
		waitAnswers(t, l, machines[0])
		kprov(t, tl.flags("lab", "restore", m.Name)...)
		waitAnswers(t, l, m)
	})

	t.Run("netem delays a machine's traffic", func(t *testing.T) {
		m := machines[0]
		out, err := kprovErr(t, tl.flags("lab", "netem", m.Name, "--delay", "100ms")...)
		if err != nil {
			if strings.Contains(out, "no netem qdisc") {
				t.Skip("this kernel has no sch_netem: " + strings.TrimSpace(out))
			}
			t.Fatalf("netem: %v\n%s", err, out)
		}
		start := time.Now()
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(m.Address.String(), "22"), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		if rtt := time.Since(start); rtt < 150*time.Millisecond {
			t.Errorf("TCP connect took %s with 100ms delay each way", rtt)
		}
		kprov(t, tl.flags("lab", "netem", m.Name, "--clear")...)
		waitAnswers(t, l, m)
	})

	t.Run("up recovers after the previous run was killed", func(t *testing.T) {
		// kill -9 every nspawn and container process, as a crashed host or a killed test run leaves them.
		current, err := lab.Open(tl.dir, log.New(os.Stderr))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range current.Machines() {
			if m.PID > 0 {
				syscall.Kill(m.PID, syscall.SIGKILL)
			}
			out, _ := exec.Command("ip", "netns", "pids", m.Netns).Output()
			for _, f := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		assertSilent(t, l, machines[0])
		again := tl.up(t, "--machines", "3")
		for _, m := range again.Machines() {
			key, host, err := sshProbe(context.Background(), again, m, 10*time.Second)
			if err != nil || host != m.Name {
				t.Fatalf("%s after recovery: host %q, %v", m.Name, host, err)
			}
			if !strings.HasPrefix(m.HostKey, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))) {
				t.Errorf("%s recovered with another host key", m.Name)
			}
		}
	})

	t.Run("down leaves nothing behind", func(t *testing.T) {
		l, _ = lab.Open(tl.dir, log.New(os.Stderr))
		kprov(t, tl.flags("lab", "down")...)
		assertNothingLeft(t, tl, l)
		assertHostSettings(t, hostBefore, "after lab down")
		// A second down of a lab that is gone is fine too.
		kprov(t, tl.flags("lab", "down")...)
	})
}

// assertNothingLeft checks the host for anything of the lab: namespaces,
// links, mounts, live processes, the directory.
func assertNothingLeft(t *testing.T, tl *testLab, l *lab.Lab) {
	t.Helper()
	for _, m := range l.Machines() {
		if _, err := os.Stat(filepath.Join("/run/netns", m.Netns)); err == nil {
			t.Errorf("namespace %s left behind", m.Netns)
		}
		if _, err := os.Stat(filepath.Join("/sys/class/net", m.HostVeth)); err == nil {
			t.Errorf("link %s left behind", m.HostVeth)
		}
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", l.Bridge())); err == nil {
		t.Errorf("bridge %s left behind", l.Bridge())
	}
	mountinfo, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mountinfo), tl.dir) {
		t.Errorf("mounts under %s left behind", tl.dir)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		cmdline, _ := os.ReadFile(p)
		if !bytes.Contains(cmdline, []byte(tl.dir)) {
			continue
		}
		// A zombie is already dead; only a reaping PID 1 can clear it.
		stat, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "stat"))
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			continue
		}
		t.Errorf("process %s left behind: %s", filepath.Base(filepath.Dir(p)), bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
	}
	if _, err := os.Stat(tl.dir); err == nil {
		t.Errorf("lab directory %s left behind", tl.dir)
	}
	for _, m := range l.Machines() {
		for _, d := range m.Cgroups {
			if _, err := os.Stat(d); err == nil {
				t.Errorf("cgroup %s left behind", d)
			}
		}
	}
	for _, d := range labCgroups(tl.name) {
		t.Errorf("cgroup %s left behind", d)
	}
}

// labCgroups finds every cgroup directory on the host whose name holds the
// lab's name (test labs have unique names), in every hierarchy.
func labCgroups(name string) []string {
	var found []string
	filepath.WalkDir("/sys/fs/cgroup", func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && strings.Contains(d.Name(), name) {
			found = append(found, p)
			return filepath.SkipDir
		}
		return nil
	})
	return found
}

// hostKernelSettings reads, in the host's own namespaces, every kernel
// setting a lab machine sets for itself or shows kubelet.
func hostKernelSettings(t *testing.T) map[string]string {
	t.Helper()
	got := map[string]string{}
	for _, s := range append(slices.Clone(lab.KubeletKernelSettings), lab.NetworkSettings...) {
		b, err := os.ReadFile(filepath.Join("/proc/sys", s.Key))
		if err != nil {
			got[s.Key] = "(" + err.Error() + ")"
			continue
		}
		got[s.Key] = strings.TrimSpace(string(b))
	}
	return got
}

// assertHostSettings checks that the host's kernel settings are what they were before the lab.
func assertHostSettings(t *testing.T, before map[string]string, when string) {
	t.Helper()
	for k, v := range hostKernelSettings(t) {
		if before[k] != v {
			t.Errorf("%s: the host's %s changed from %s to %s", when, k, before[k], v)
		}
	}
}

// assertReadyForKubelet checks on a running machine what kubelet and
// containerd need from it: the boot unit ran before containerd, forwarding
// is on in its own network namespace, kubelet sees the kernel-wide values it
// wants, /dev/kmsg exists, it has its own cgroup in every hierarchy the
// host has and may make cgroups in it, and runc is there (containerd is not:
// kprov installs it).
func assertReadyForKubelet(t *testing.T, tl *testLab, m lab.MachineState) {
	t.Helper()
	// The lab as recorded now: a machine that was started again has a new PID.
	l, err := lab.Open(tl.dir, log.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	if m, err = l.Machine(m.Name); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := func(cmd string) string {
		t.Helper()
		out, err := l.Output(ctx, m.Name, cmd)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	// sshd may answer before the boot unit has finished: wait for it.
	for {
		out, _ := l.Output(ctx, m.Name, "systemctl is-active "+lab.PrepUnit+" || true")
		if st := strings.TrimSpace(string(out)); st != "activating" && st != "inactive" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%s: %s did not finish: %s", m.Name, lab.PrepUnit, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := run("systemctl is-active " + lab.PrepUnit + " || true"); got != "active" {
		t.Errorf("%s: %s is %s:\n%s", m.Name, lab.PrepUnit, got, run("journalctl -b -u "+lab.PrepUnit+" --no-pager 2>&1 || true"))
	}
	for _, s := range append(slices.Clone(lab.NetworkSettings), lab.KubeletKernelSettings...) {
		if got := run("cat /proc/sys/" + s.Key); got != s.Value {
			t.Errorf("%s: %s is %s, want %s", m.Name, s.Key, got, s.Value)
		}
	}
	if got := run("test -c /dev/kmsg && readlink /dev/kmsg"); got != "/dev/console" {
		t.Errorf("%s: /dev/kmsg is %q, want a link to /dev/console", m.Name, got)
	}
	// No container runtime yet (kprov installs it), but Debian's runc, which the lab's inventory uses.
	if got := run("dpkg-query -W -f '${Version}' runc"); got == "" {
		t.Errorf("%s: runc is not installed", m.Name)
	}
	if got := run("command -v containerd || echo none"); got != "none" {
		t.Errorf("%s: a fresh machine has containerd at %s; kprov is to install it", m.Name, got)
	}
	// The machine's cgroups are writable from inside, where kubelet makes its own.
	run(`for h in memory cpu pids systemd; do d=/sys/fs/cgroup/$h$(awk -F: -v h=$h '$2==h || $2=="name="h {print $3}' /proc/self/cgroup)/kprov-e2e-probe; mkdir "$d" && rmdir "$d"; done`)

	// From the host: the machine has a cgroup in every hierarchy this
	// process is in, and every one of its processes is in them.
	own, _ := os.ReadFile("/proc/self/cgroup")
	if n := strings.Count(strings.TrimSpace(string(own)), "\n") + 1; len(m.Cgroups) != n {
		t.Errorf("%s has %d cgroups %q; this process is in %d hierarchies", m.Name, len(m.Cgroups), m.Cgroups, n)
	}
	out, err := exec.Command("ip", "netns", "pids", m.Netns).Output()
	if err != nil {
		t.Fatal(err)
	}
	// systemd-nspawn itself, in the host's network namespace.
	if cg, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(m.PID), "cgroup")); err != nil || strings.Count(string(cg), "/kprov-lab."+tl.name+"."+m.Name) != len(m.Cgroups) {
		t.Errorf("%s: systemd-nspawn (%d) is not in the machine's cgroups: %s %v", m.Name, m.PID, cg, err)
	}
	netns, err := os.Stat(filepath.Join("/run/netns", m.Netns))
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range strings.Fields(string(out)) {
		cg, err := os.ReadFile(filepath.Join("/proc", pid, "cgroup"))
		if err != nil {
			continue // exited meanwhile
		}
		// Still the machine's process? A short-lived one (an SSH session)
		// may have exited and its PID gone to a host process since.
		ns, err := os.Stat(filepath.Join("/proc", pid, "ns/net"))
		if err != nil || !os.SameFile(ns, netns) {
			continue
		}
		// Only the machine's own processes: those systemd-nspawn forked,
		// directly or not (an orphan inside is adopted by the machine's
		// init, still below nspawn). This sandbox's own agents may enter a
		// network namespace too; they are the host's, not the machine's.
		if !descendsFrom(pid, m.PID) {
			comm, _ := os.ReadFile(filepath.Join("/proc", pid, "comm"))
			t.Logf("%s: process %s (%s) in the machine's network namespace is not the machine's (not below systemd-nspawn %d); not checked", m.Name, pid, strings.TrimSpace(string(comm)), m.PID)
			continue
		}
		// A process the machine is forking right now shows the root
		// cgroup in every hierarchy: the kernel lists a new child before
		// it joins its parent's cgroups (cgroup_fork, then
		// cgroup_post_fork). One that is really outside stays there.
		outside := outsideCgroup(string(cg), "/kprov-lab."+tl.name+"."+m.Name)
		for deadline := time.Now().Add(2 * time.Second); len(outside) > 0 && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
			again, err := os.ReadFile(filepath.Join("/proc", pid, "cgroup"))
			if err != nil {
				outside = nil // exited
				break
			}
			outside = outsideCgroup(string(again), "/kprov-lab."+tl.name+"."+m.Name)
		}
		for _, line := range outside {
			t.Errorf("%s: process %s is outside the machine's cgroup: %s", m.Name, pid, line)
		}
	}
}

// outsideCgroup returns the lines of a /proc/PID/cgroup text that do not
// name the machine's cgroup.
func outsideCgroup(text, machine string) []string {
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if !strings.Contains(line, machine) {
			out = append(out, line)
		}
	}
	return out
}

// descendsFrom reports whether process pid is ancestor or one of its
// descendants, following each process's parent in /proc.
func descendsFrom(pid string, ancestor int) bool {
	for range 1000 { // a bound against a cycle of reused PIDs
		p, err := strconv.Atoi(pid)
		if err != nil || p <= 1 {
			return false
		}
		if p == ancestor {
			return true
		}
		stat, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
		if err != nil {
			return false
		}
		// PID (COMM) STATE PPID ...: COMM may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			return false
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 {
			return false
		}
		pid = f[1]
	}
	return false
}
