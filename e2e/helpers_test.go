//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/charmbracelet/log"

	"github.com/kprov/kprov/lab"
)

// artifactsDir is the cache of built binaries (etcd, kubeadm) that every e2e
// test needing them shares, so a run builds each one once:
// KPROV_ARTIFACTS_DIR, else lab.DefaultArtifactsDir, the cache `kprov lab
// artifacts` fills, else, when not root and so unable to write there,
// kprov/artifacts in the user's cache directory.
func artifactsDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("KPROV_ARTIFACTS_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return lab.DefaultArtifactsDir
	}
	d, err := os.UserCacheDir()
	if err != nil {
		t.Fatalf("artifact cache: %v (set KPROV_ARTIFACTS_DIR)", err)
	}
	return filepath.Join(d, "kprov", "artifacts")
}

// UpLab brings up a lab with the given machines for one test, with its own
// name and directory, and tears it down when the test ends. It is the entry
// point for end-to-end tests of other features:
//
//	specs, _ := lab.TopologyMachines("ha-stacked")
//	l := UpLab(t, specs)
//	// l.InventoryPath(), l.Dial(ctx, "master-1"), l.Stop(ctx, "master-2", 0), ...
//
// Each option may change the lab's Options before it comes up (a fixed
// subnet, for one).
func UpLab(t *testing.T, specs []lab.MachineSpec, options ...func(*lab.Options)) *lab.Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("lab machines need root (and scripts/setup)")
	}
	suffix := make([]byte, 3)
	rand.Read(suffix)
	logger := log.NewWithOptions(os.Stderr, log.Options{Prefix: t.Name()})
	opts := lab.Options{
		Name:     "e2e-" + hex.EncodeToString(suffix),
		Dir:      filepath.Join(t.TempDir(), "lab"),
		CacheDir: os.Getenv("KPROV_LAB_CACHE"),
		// The lab's inventory names the cached binaries in an artifacts block.
		ArtifactsDir: os.Getenv("KPROV_ARTIFACTS_DIR"),
		Machines:     specs,
	}
	for _, o := range options {
		o(&opts)
	}
	// On a fresh machine this builds every binary and image (about half an
	// hour on 2 cores); later calls find them cached.
	ctx, cancel := context.WithTimeout(context.Background(), 75*time.Minute)
	defer cancel()
	// The lab's inventory names the cached binaries in its artifacts block, so
	// the cache is filled first: on a fresh machine this is where etcd and the
	// Kubernetes binaries are built (once; later calls find them cached).
	opts.ArtifactsDir = artifactsDir(t)
	if _, err := lab.BuildArtifacts(ctx, opts.ArtifactsDir, lab.Versions{}, logger); err != nil {
		t.Fatalf("build the lab's artifacts: %v", err)
	}
	t.Cleanup(func() {
		if err := lab.Down(context.Background(), opts.Name, opts.Dir, logger); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	l, err := lab.Up(ctx, opts, logger)
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	// Runs before the lab goes down (cleanups run last-in first-out): when the
	// test failed, each machine's sshd and kprov-unit journal goes into the
	// log, since the machines are gone afterwards.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		dctx, dcancel := context.WithTimeout(context.Background(), time.Minute)
		defer dcancel()
		for _, m := range l.Machines() {
			out, err := l.Output(dctx, m.Name, "journalctl -u ssh -u 'kprov-*' -u etcd -u containerd -u kubelet -n 80 --no-pager -o short-precise; tail -n 40 /var/lib/kprov/kubeadm.log 2>/dev/null; true")
			t.Logf("%s journal (ssh, kprov units, etcd, containerd, kubelet) and kubeadm's last output, err=%v:\n%s", m.Name, err, out)
			if err != nil {
				t.Log(unansweredMachine(dctx, l, m.Name))
			}
		}
	})
	return l
}

// TestUpLabAPI checks the library path other e2e tests use: a two-machine lab
// from lab.Up, fault controls called directly, and Down through t.Cleanup.
func TestUpLabAPI(t *testing.T) {
	specs, err := lab.CountMachines(2)
	if err != nil {
		t.Fatal(err)
	}
	l := UpLab(t, specs)
	ctx := context.Background()
	out, err := l.Output(ctx, "node-2", "hostname")
	if err != nil || string(out) != "node-2\n" {
		t.Fatalf("node-2 hostname: %q, %v", out, err)
	}
	if err := l.Stop(ctx, "node-2", 0); err != nil {
		t.Fatal(err)
	}
	if l.Reachable(ctx, "node-2", 2*time.Second) {
		t.Error("node-2 answers after a hard stop")
	}
	if err := l.Start(ctx, "node-2", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := l.Pause(ctx, "node-2"); err != nil {
		t.Fatal(err)
	}
	if l.Reachable(ctx, "node-2", 2*time.Second) {
		t.Error("node-2 answers SSH while paused")
	}
	if err := l.Resume(ctx, "node-2"); err != nil {
		t.Fatal(err)
	}
	if !l.Reachable(ctx, "node-2", 10*time.Second) {
		t.Error("node-2 does not answer after resume")
	}
	if err := l.Cut(ctx, "node-1"); err != nil {
		t.Fatal(err)
	}
	if l.Reachable(ctx, "node-1", 2*time.Second) {
		t.Error("node-1 answers while cut")
	}
	if err := l.Restore(ctx, "node-1"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := l.WaitSSH(wctx, "node-1"); err != nil {
		t.Fatal(err)
	}
	for _, st := range l.Status(ctx) {
		if st.State != "running" || !st.SSH || st.Cut {
			t.Errorf("%s: %+v after restore", st.Name, st)
		}
	}
}

// unansweredMachine says what the lab knows of a machine that did not
// answer SSH: whether its systemd-nspawn runs, and the end of its console
// (where systemd reports a failed sshd, a crash or a shutdown).
func unansweredMachine(ctx context.Context, l *lab.Lab, name string) string {
	var b strings.Builder
	for _, st := range l.Status(ctx) {
		if st.Name == name {
			fmt.Fprintf(&b, "%s did not answer: lab state %s, ssh %v, cut %v, paused %v\n", name, st.State, st.SSH, st.Cut, st.Paused)
		}
	}
	console, err := os.ReadFile(filepath.Join(l.Dir(), "machines", name, "console.log"))
	if err != nil {
		fmt.Fprintf(&b, "console: %v", err)
		return b.String()
	}
	lines := strings.Split(strings.TrimRight(string(console), "\n"), "\n")
	fmt.Fprintf(&b, "the last lines of its console:\n%s", strings.Join(lines[max(len(lines)-40, 0):], "\n"))
	return b.String()
}

// Long lab tests run beside one another, but two Kubernetes control
// planes with several masters each are more than 2 cores carry: API
// servers and controllers then miss their leases and restart, and a
// health check right after an apply sees it. labTurns lets at most
// KPROV_E2E_LABS long tests (default 2) run at once, and among them at
// most one heavy one (several Kubernetes masters), which runs beside an
// etcd-only or single-node one. go test's -parallel must be at least the
// number of long tests, so that all of them wait here and not in go
// test's own queue.
var labTurns = newLabScheduler(labsAtOnce())

func labsAtOnce() int {
	if n, err := strconv.Atoi(os.Getenv("KPROV_E2E_LABS")); err == nil && n > 0 {
		return n
	}
	return 2
}

// labScheduler hands out the turns. A heavy test that could run (no
// other heavy one runs) has the first claim on a free slot: a light test
// never takes the last free slot from it, so the heavy tests, which run
// one at a time and make the suite's critical path, each have a light
// one beside them instead of all running alone at the end.
type labScheduler struct {
	mu           sync.Mutex
	cond         *sync.Cond
	slots        int
	running      int
	heavyRunning bool
	heavyWaiting int
	// An alone test runs with no other: none starts while one waits.
	aloneRunning bool
	aloneWaiting int
}

func newLabScheduler(slots int) *labScheduler {
	s := &labScheduler{slots: slots}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// canRun says whether a test may start now (s.mu held).
func (s *labScheduler) canRun(heavy bool) bool {
	switch {
	case s.aloneRunning || s.aloneWaiting > 0:
		return false
	case s.running >= s.slots:
		return false
	case heavy:
		return !s.heavyRunning
	default:
		// The last free slot is kept for a heavy test that could run.
		return s.heavyWaiting == 0 || s.heavyRunning || s.running < s.slots-1
	}
}

// acquire waits for a turn.
func (s *labScheduler) acquire(heavy bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if heavy {
		s.heavyWaiting++
	}
	for !s.canRun(heavy) {
		s.cond.Wait()
	}
	if heavy {
		s.heavyWaiting--
		s.heavyRunning = true
	}
	s.running++
}

// acquireAlone waits until no other long test runs, and keeps every
// other one waiting while it runs.
func (s *labScheduler) acquireAlone() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.aloneWaiting++
	for s.running > 0 || s.aloneRunning {
		s.cond.Wait()
	}
	s.aloneWaiting--
	s.aloneRunning = true
}

// releaseAlone gives the whole machine back.
func (s *labScheduler) releaseAlone() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.aloneRunning = false
	s.cond.Broadcast()
}

// release gives a turn back.
func (s *labScheduler) release(heavy bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running--
	if heavy {
		s.heavyRunning = false
	}
	s.cond.Broadcast()
}

// runsAlone marks a long lab test parallel but runs it with no other:
// the three-master stacked cluster with workers is more than 2 cores carry
// beside another lab (seen: probes past 60 s, API servers answering 500,
// static pods left Pending).
func runsAlone(t *testing.T) {
	t.Parallel()
	start := time.Now()
	labTurns.acquireAlone()
	t.Cleanup(labTurns.releaseAlone)
	if waited := time.Since(start); waited > time.Second {
		t.Logf("waited %s to run alone", waited.Round(time.Second))
	}
}

// runsBeside marks a long lab test parallel and waits for its turn
// (heavy: several Kubernetes masters). The turn is given back after the
// test's lab is down: cleanups run in reverse order, and this runs before
// the lab is made.
func runsBeside(t *testing.T, heavy bool) {
	t.Parallel()
	start := time.Now()
	labTurns.acquire(heavy)
	t.Cleanup(func() { labTurns.release(heavy) })
	if waited := time.Since(start); waited > time.Second {
		t.Logf("waited %s for its turn (heavy: %v)", waited.Round(time.Second), heavy)
	}
}

// statusHealthy runs kprov status until it reports a healthy cluster
// (exit 0) and returns that output; the test fails with the last output
// if it does not within the given time. Right after an apply a loaded
// machine can leave a member or a control-plane component catching up
// for a moment; what the test claims is that the cluster is healthy,
// which status shows once it is.
func statusHealthy(t *testing.T, ctx context.Context, inv string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for attempt := 1; ; attempt++ {
		out, err := kprovErr(t, "-f", inv, "status")
		if err == nil {
			if attempt > 1 {
				t.Logf("kprov status healthy at attempt %d", attempt)
			}
			return out
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("kprov status not healthy within %s (%d attempts): %v\n%s", within, attempt, err, out)
		}
		t.Logf("kprov status attempt %d: %v: %s", attempt, err, lastLine(out))
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
}

// lastLine is the last non-empty line of out.
func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return lines[len(lines)-1]
}

// TestLabScheduler: with two slots, a heavy test runs beside a light one,
// never beside another heavy one, and a light test leaves the last free
// slot to a heavy one that could run.
func TestLabScheduler(t *testing.T) {
	s := newLabScheduler(2)
	s.acquire(false) // a light test runs; no heavy one waits yet
	s.mu.Lock()
	s.heavyWaiting++ // a heavy test starts waiting
	if s.canRun(false) {
		t.Error("a light test took the last free slot from a waiting heavy one")
	}
	if !s.canRun(true) {
		t.Error("a heavy test cannot run beside a light one")
	}
	s.heavyWaiting--
	s.mu.Unlock()
	s.acquire(true)
	s.mu.Lock()
	if s.canRun(true) || s.canRun(false) {
		t.Error("a third test may start with two slots taken")
	}
	s.mu.Unlock()
	s.release(false)
	s.mu.Lock()
	if s.canRun(true) {
		t.Error("a second heavy test may run beside the first")
	}
	if !s.canRun(false) {
		t.Error("a light test may not run beside a heavy one")
	}
	s.mu.Unlock()
	s.release(true)
	if s.running != 0 || s.heavyRunning {
		t.Errorf("after every release: %d running, heavy running %v", s.running, s.heavyRunning)
	}

	// A test that runs alone: nothing else starts while it waits or runs.
	s.acquire(false)
	s.mu.Lock()
	s.aloneWaiting++
	if s.canRun(false) || s.canRun(true) {
		t.Error("a test started while one that runs alone waited")
	}
	s.aloneWaiting--
	s.mu.Unlock()
	s.release(false)
	s.acquireAlone()
	s.mu.Lock()
	if s.canRun(false) || s.canRun(true) {
		t.Error("a test may start beside one that runs alone")
	}
	s.mu.Unlock()
	s.releaseAlone()
	s.mu.Lock()
	if !s.canRun(true) {
		t.Error("nothing may start after the test that ran alone")
	}
	s.mu.Unlock()
}
