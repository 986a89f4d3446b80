//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/lab"
	"github.com/kprov/kprov/provision/plan"
)

// membershipSpecs is the membership lab: the upgrade lab's three members
// and master, and three spare etcd machines that boot with it but join
// the inventory only when a step of the test puts them there.
func membershipSpecs() []lab.MachineSpec {
	specs := upgradeSpecs()
	for _, n := range []string{"etcd-4", "etcd-5", "etcd-6"} {
		specs = append(specs, lab.MachineSpec{Name: n, Roles: []inventory.Role{inventory.RoleEtcd}})
	}
	return specs
}

// TestEtcdMembership changes external etcd's membership on one lab, with
// the load harness running throughout (writes acknowledged and read back,
// every member's status polled):
//
//   - a non-leader member's machine is stopped (plug pulled) and swapped
//     for a spare in the inventory: apply removes the dead member by its
//     ID through a live one, saying what it leaves on the dead machine,
//     then adds the spare as a learner and promotes it;
//   - a live member is swapped for a spare: the spare joins first, then
//     the old member is removed (leadership moved away if it leads),
//     stopped and wiped on its own machine. That apply is interrupted with
//     Ctrl-C once the learner is listed; the re-run finishes it without
//     adding it again (same member ID, never two learners);
//   - 3 → 5 → 3: learners one at a time, each promoted before the next;
//     the scale-in removes the leader of the moment among others, last;
//   - every operation is interrupted once at least (Ctrl-C or SIGKILL,
//     once a change took effect or as one begins), and the re-run
//     finishes it without repeating a change that took effect;
//   - at five members, a configuration change rolls through them, and a
//     machine is stopped in the middle of it (rollWithMachineStopped).
//
// After each change a second apply prints No changes; at the end no
// acknowledged write is lost, no more than one learner was ever listed, and
// a quorum of healthy voters never went missing.
func TestEtcdMembership(t *testing.T) {
	runsBeside(t, false)
	l := UpLab(t, membershipSpecs())
	inv := l.InventoryPath()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	full, err := os.ReadFile(inv)
	if err != nil {
		t.Fatal(err)
	}
	tuned := false // from (d) on, the inventory carries a configuration change
	setEtcd := func(members ...string) {
		t.Helper()
		text := withEtcdHosts(t, string(full), members...)
		if tuned {
			text = withEtcdTuning(t, text, "150ms", "1500ms", "4GiB")
		}
		writeFile(t, inv, text)
	}
	// converge applies (extra: e.g. --break-lock after a killed run) and
	// checks that the next apply has nothing to do.
	converge := func(step string, extra ...string) string {
		t.Helper()
		start := time.Now()
		out, err := kprovErr(t, append([]string{"-f", inv, "apply", "--auto-approve"}, extra...)...)
		if err != nil {
			t.Fatalf("%s: apply: %v\n%s", step, err, out)
		}
		t.Logf("%s: applied in %s", step, time.Since(start).Round(time.Second))
		again, err := kprovErr(t, "-f", inv, "apply", "--auto-approve")
		if err != nil || !strings.Contains(again, "No changes") {
			t.Errorf("%s: the apply after it: %v, want No changes\n%s", step, err, again)
		}
		return out
	}

	// The cluster: etcd-1..3 and the master.
	setEtcd("etcd-1", "etcd-2", "etcd-3")
	out, err := kprovErr(t, "-f", inv, "apply", "--auto-approve")
	assertApplied(t, out, err)
	cli := etcdClient(t, ctx, l, inv)
	defer cli.Close()
	before := members(t, ctx, cli)
	assertMembers(t, before, "etcd-1", "etcd-2", "etcd-3")
	load := startEtcdLoad(t, ctx, l, inv)

	// (a) A dead member replaced: a non-leader's machine stopped, swapped for etcd-4.
	leader := leaderName(t, ctx, cli)
	dead := "etcd-3"
	if leader == dead {
		dead = "etcd-2"
	}
	deadID := before[dead].ID
	if err := l.Stop(ctx, dead, 0); err != nil {
		t.Fatal(err)
	}
	stay := slices.DeleteFunc([]string{"etcd-1", "etcd-2", "etcd-3"}, func(n string) bool { return n == dead })
	setEtcd(append(slices.Clone(stay), "etcd-4")...)
	if status, _ := kprovErr(t, "-f", inv, "status"); !strings.Contains(status, "etcd: member "+dead+" (") || !strings.Contains(status, "is on no host of the inventory") {
		t.Errorf("kprov status with %s out of the inventory does not name it as departing:\n%s", dead, status)
	}
	// Stopped (Ctrl-C) once the removal took effect: the re-run does not
	// remove it again and adds etcd-4.
	stopped := interruptApply(t, ctx, inv, regexp.MustCompile(`^\[etcd\] removing member `+dead+`.*: done in `), syscall.SIGINT)
	out = converge("replace dead " + dead)
	assertStagesInTurn(t, out)
	if strings.Contains(out, "[etcd] removing member "+dead) {
		t.Errorf("the re-run removed %s again:\n%s", dead, out)
	}
	out = stopped + out
	if i, j := strings.Index(out, "[etcd] removing member "+dead), strings.Index(out, "[etcd] adding member 3/3 (etcd-4)"); i < 0 || j < 0 || i > j {
		t.Errorf("replace dead %s: want its removal before etcd-4 is added:\n%s", dead, out)
	}
	if !strings.Contains(out, "are left on it") {
		t.Errorf("replace dead %s: the plan does not say what is left on the dead machine:\n%s", dead, out)
	}
	now := members(t, ctx, cli)
	assertMembers(t, now, append(slices.Clone(stay), "etcd-4")...)
	for _, m := range now {
		if m.ID == deadID {
			t.Errorf("the dead member's ID %x is still listed", deadID)
		}
	}

	// (b) A live member replaced: etcd-1 swapped for etcd-5, interrupted
	// once etcd-5 is listed as a learner.
	stay = slices.DeleteFunc(stay, func(n string) bool { return n == "etcd-1" })
	oldID := now["etcd-1"].ID
	setEtcd(append(slices.Clone(stay), "etcd-4", "etcd-5")...)
	run := startApplyUntil(t, ctx, "[etcd] adding member 3/3 (etcd-5) ...", "-f", inv, "apply", "--auto-approve")
	learner := waitLearner(t, ctx, cli, mustAddress(t, l, "etcd-5"))
	if err := run.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	first, err := run.wait()
	t.Logf("interrupted with etcd-5 listed (ID %x, learner %v): %s", learner.ID, learner.IsLearner, failureLine(first))
	if exitCode(err) != 1 {
		t.Errorf("the interrupted apply: %v, want exit 1\n%s", err, first)
	}
	// Killed (SIGKILL) as etcd-1's removal begins, etcd-5 promoted.
	killed := interruptApply(t, ctx, inv, regexp.MustCompile(`^\[etcd\] removing member etcd-1 .*\.\.\.$`), syscall.SIGKILL)
	if strings.Contains(killed, "etcd learner added") {
		t.Errorf("the second run added etcd-5 again:\n%s", killed)
	}
	waitStaleLock(t, inv)
	out = converge("replace live etcd-1", "--break-lock")
	assertStagesInTurn(t, out)
	if strings.Contains(out, "etcd learner added") {
		t.Errorf("the re-run added etcd-5 again:\n%s", out)
	}
	now = members(t, ctx, cli)
	assertMembers(t, now, append(slices.Clone(stay), "etcd-4", "etcd-5")...)
	if now["etcd-5"].ID != learner.ID {
		t.Errorf("etcd-5 is member %x, the interrupted run added %x: added twice", now["etcd-5"].ID, learner.ID)
	}
	for _, m := range now {
		if m.ID == oldID {
			t.Errorf("etcd-1's member %x is still listed", oldID)
		}
	}
	assertRetired(t, ctx, l, "etcd-1")

	// (c) 3 → 5: etcd-1 (wiped: a fresh machine now) and etcd-6 join one at a time.
	three := append(slices.Clone(stay), "etcd-4", "etcd-5")
	five := append(slices.Clone(three), "etcd-1", "etcd-6")
	setEtcd(five...)
	// Stopped (Ctrl-C) as etcd-6's addition begins, etcd-1 added: the
	// re-run adds etcd-6 only (etcd-1 keeps its member ID).
	interruptApply(t, ctx, inv, regexp.MustCompile(`^\[etcd\] adding member 5/5 \(etcd-6\) \.\.\.$`), syscall.SIGINT)
	added := members(t, ctx, cli)["etcd-1"]
	out = converge("3 → 5")
	assertStagesInTurn(t, out)
	if strings.Contains(out, "adding member 4/5 (etcd-1)") {
		t.Errorf("the re-run added etcd-1 again:\n%s", out)
	}
	now = members(t, ctx, cli)
	assertMembers(t, now, five...)
	if added == nil || now["etcd-1"].ID != added.ID {
		t.Errorf("etcd-1 was member %v when the run was stopped, %x now: added twice", added, now["etcd-1"].ID)
	}

	// (d) A machine stopped in the middle of a rolling restart.
	rollWithMachineStopped(t, ctx, l, inv, cli, load, five, func() { tuned = true; setEtcd(five...) }, converge)

	// 5 → 3: the leader of the moment and one more leave, the leader last.
	leader = leaderName(t, ctx, cli)
	var keep []string
	for _, n := range five {
		if n != leader && len(keep) < 3 {
			keep = append(keep, n)
		}
	}
	var leave []string
	for _, n := range five {
		if !slices.Contains(keep, n) {
			leave = append(leave, n)
		}
	}
	setEtcd(keep...)
	// Killed (SIGKILL) once the first removal took effect.
	killed = interruptApply(t, ctx, inv, regexp.MustCompile(`^\[etcd\] removing member .*: done in `), syscall.SIGKILL)
	waitStaleLock(t, inv)
	out = converge(fmt.Sprintf("5 → 3 (%s leave, %s leads)", strings.Join(leave, ", "), leader), "--break-lock")
	assertStagesInTurn(t, out)
	if first, again := removalOrder(killed), removalOrder(out); len(first) != 1 || slices.Contains(again, first[0]) {
		t.Errorf("5 → 3: the killed run removed %v, the re-run %v: want one, then the other", first, again)
	}
	removed := removalOrder(killed + out)
	if len(removed) != 2 || removed[1] != leader {
		t.Errorf("5 → 3 removed %v; want two, the leader %s last:\n%s", removed, leader, out)
	}
	now = members(t, ctx, cli)
	assertMembers(t, now, keep...)
	for _, n := range leave {
		assertRetired(t, ctx, l, n)
	}

	load.stop()
	load.verify(t, ctx, cli)
	figures := load.figures()
	t.Logf("load during the membership changes: %s", figures)
	assertPlanned(t, figures)
}

// withEtcdHosts is the lab inventory with only the named etcd hosts (in
// lab order) and every other host.
func withEtcdHosts(t *testing.T, text string, etcd ...string) string {
	t.Helper()
	block := regexp.MustCompile(`(?ms)^host "([^"]+)" \{\n.*?^\}\n`)
	out := block.ReplaceAllStringFunc(text, func(b string) string {
		name := block.FindStringSubmatch(b)[1]
		if strings.HasPrefix(name, "etcd-") && !slices.Contains(etcd, name) {
			return ""
		}
		return b
	})
	for _, n := range etcd {
		if !strings.Contains(out, fmt.Sprintf("host %q {", n)) {
			t.Fatalf("no host %s in the lab inventory:\n%s", n, text)
		}
	}
	return out
}

// members lists etcd's members by name.
func members(t *testing.T, ctx context.Context, cli *clientv3.Client) map[string]*etcdMemberInfo {
	t.Helper()
	list, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*etcdMemberInfo{}
	for _, m := range list.Members {
		out[m.Name] = &etcdMemberInfo{ID: m.ID, IsLearner: m.IsLearner, PeerURLs: m.PeerURLs}
	}
	return out
}

type etcdMemberInfo struct {
	ID        uint64
	IsLearner bool
	PeerURLs  []string
}

// assertMembers checks the members are exactly the named ones, all voters.
func assertMembers(t *testing.T, got map[string]*etcdMemberInfo, want ...string) {
	t.Helper()
	var names []string
	for n, m := range got {
		names = append(names, n)
		if m.IsLearner {
			t.Errorf("%s (%x) is still a learner", n, m.ID)
		}
	}
	slices.Sort(names)
	w := slices.Sorted(slices.Values(want))
	if !slices.Equal(names, w) {
		t.Fatalf("etcd members %v, want %v", names, w)
	}
}

// waitLearner polls etcd until a member with the address's peer URL is
// listed and returns it.
func waitLearner(t *testing.T, ctx context.Context, cli *clientv3.Client, addr string) *etcdMemberInfo {
	t.Helper()
	peer := plan.EtcdPeerURL(addr)
	for ctx.Err() == nil {
		if list, err := cli.MemberList(ctx); err == nil {
			for _, m := range list.Members {
				if slices.Contains(m.PeerURLs, peer) {
					return &etcdMemberInfo{ID: m.ID, IsLearner: m.IsLearner, PeerURLs: m.PeerURLs}
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no member with peer URL %s: %v", peer, ctx.Err())
	return nil
}

// assertRetired checks a removed member's machine: etcd stopped, its data
// directory gone or empty.
func assertRetired(t *testing.T, ctx context.Context, l *lab.Lab, machine string) {
	t.Helper()
	out, err := l.Output(ctx, machine, "systemctl is-active etcd; ls -A /var/lib/etcd 2>/dev/null | wc -l")
	if s := strings.Fields(string(out)); len(s) != 2 || s[0] == "active" || s[1] != "0" {
		t.Errorf("%s after its removal: %q (%v), want etcd not active and no data", machine, out, err)
	}
}

// membershipStageLine is an etcd membership stage's line in apply's output.
var membershipStageLine = regexp.MustCompile(`^\[etcd\] (adding|removing) member (.*?)( \.\.\.|: done in .*|: FAILED .*)$`)

// assertStagesInTurn checks that every membership stage began only after
// the one before it was done: one change at a time.
func assertStagesInTurn(t *testing.T, out string) {
	t.Helper()
	open := ""
	for _, line := range strings.Split(out, "\n") {
		m := membershipStageLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		what := m[1] + " " + m[2]
		switch {
		case m[3] == " ...":
			if open != "" {
				t.Errorf("%s began while %s was not done:\n%s", what, open, out)
			}
			open = what
		case strings.HasPrefix(m[3], ": done"):
			open = ""
		default:
			t.Errorf("%s failed:\n%s", what, out)
		}
	}
}

// removalOrder is the members whose removal stages finished, in order.
func removalOrder(out string) []string {
	var done []string
	for _, line := range strings.Split(out, "\n") {
		if m := membershipStageLine.FindStringSubmatch(line); m != nil && m[1] == "removing" && strings.HasPrefix(m[3], ": done") {
			done = append(done, strings.Fields(m[2])[0])
		}
	}
	return done
}

// rollWithMachineStopped changes the configuration of five members (tune
// writes the change into the inventory), which restarts each in turn, and
// once the second restart has begun stops the machine of a member that
// neither was restarted yet nor leads. kprov must stop at the health wait
// after that restart, name the stopped member and say what to do, and
// begin no other restart; etcd keeps its quorum throughout (two of five
// down at most). With the machine back, the re-run (converge) restarts
// exactly the members that do not run the new settings yet, the leader
// last, and then every member serves with them.
func rollWithMachineStopped(t *testing.T, ctx context.Context, l *lab.Lab, inv string, cli *clientv3.Client, load *etcdLoad,
	five []string, tune func(), converge func(string, ...string) string) {
	t.Helper()
	const quota = 4 << 30
	tune()
	leader := leaderName(t, ctx, cli)
	run := startApplyUntil(t, ctx, "[etcd] restarting member ", "-f", inv, "apply", "--auto-approve")
	for range 2 { // the first one's done line, then the second one's begin line
		if !run.waitLine("[etcd] restarting member ") {
			out, err := run.wait()
			t.Fatalf("the configuration change ended before its second restart began: %v\n%s", err, out)
		}
	}
	lines := strings.Split(strings.TrimSpace(run.stdout.String()), "\n")
	m := restartStageLine.FindStringSubmatch(lines[len(lines)-1])
	firstDone := rollStages(t, run.stdout.String(), restartStageLine, true)
	if m == nil || m[2] != " ..." || len(firstDone) != 1 {
		out, _ := run.wait()
		t.Fatalf("want the first restart done and the second begun, got %q (done: %v)\n%s", lines[len(lines)-1], firstDone, out)
	}
	second := m[1]
	victim := ""
	for _, n := range five {
		if n != firstDone[0] && n != second && n != leader {
			victim = n
			break
		}
	}
	if err := l.Stop(ctx, victim, 0); err != nil {
		t.Fatal(err)
	}
	out, err := run.wait()
	t.Logf("%s stopped while %s restarted (%s done, %s leads): %s", victim, second, firstDone[0], leader, failureLine(out))
	if exitCode(err) != 1 {
		t.Errorf("the roll with %s stopped: %v, want exit 1\n%s", victim, err, out)
	}
	for _, want := range []string{"etcd member " + victim + " not healthy for ", "restarted nothing else", "bring " + victim + " back", "run kprov apply again"} {
		if !strings.Contains(out, want) {
			t.Errorf("the roll with %s stopped does not say %q:\n%s", victim, want, out)
		}
	}
	began := 0
	for _, line := range strings.Split(out, "\n") {
		if m := restartStageLine.FindStringSubmatch(line); m != nil && m[2] == " ..." {
			began++
		}
	}
	if began != 2 {
		t.Errorf("%d restarts began with %s stopped, want 2 (the first and the one under way):\n%s", began, victim, out)
	}
	if load.figures().maxDown > 2 {
		t.Errorf("etcd's status showed %d members not answering at once: kprov restarted one while %s was down", load.figures().maxDown, victim)
	}

	if err := l.Start(ctx, victim, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	tuned := waitQuotas(t, ctx, cli, len(five))
	leader = leaderName(t, ctx, cli)
	out = converge(fmt.Sprintf("the configuration change with %s back", victim))
	again := rollStages(t, out, restartStageLine, false)
	t.Logf("before the re-run the new settings ran on %v; the re-run restarted %v (leader %s)", tuned, again, leader)
	for _, n := range five {
		switch {
		case slices.Contains(tuned[quota], n) && slices.Contains(again, n):
			t.Errorf("the re-run restarted %s, which already ran the new settings", n)
		case !slices.Contains(tuned[quota], n) && !slices.Contains(again, n):
			t.Errorf("the re-run did not restart %s, which ran the old settings", n)
		}
	}
	if n := len(again); n > 0 && slices.Contains(again, leader) && again[n-1] != leader {
		t.Errorf("the re-run restarted %v; want the leader %s last", again, leader)
	}
	if q := waitQuotas(t, ctx, cli, len(five)); len(q[quota]) != len(five) {
		t.Errorf("after the re-run the members serve with these backend quotas: %v; want %d everywhere", q, quota)
	}
}

// waitQuotas waits until n members answer for their status and returns
// them by the backend quota each reports.
func waitQuotas(t *testing.T, ctx context.Context, cli *clientv3.Client, n int) map[int64][]string {
	t.Helper()
	var last error
	for ctx.Err() == nil {
		byQuota, answered := map[int64][]string{}, 0
		list, err := cli.MemberList(ctx)
		if err == nil {
			for _, m := range list.Members {
				if len(m.ClientURLs) == 0 {
					continue
				}
				sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				st, serr := cli.Status(sctx, m.ClientURLs[0])
				cancel()
				if serr != nil {
					err = fmt.Errorf("%s: %w", m.Name, serr)
					continue
				}
				byQuota[st.DbSizeQuota] = append(byQuota[st.DbSizeQuota], m.Name)
				answered++
			}
		}
		if answered == n {
			return byQuota
		}
		last = err
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	t.Fatalf("%d members never answered for their status: %v", n, last)
	return nil
}

// interruptApply starts apply on inv, sends sig once it prints a line
// matching re, and returns its output. A run that ends first fails the
// test; one that does not exit 1 (Ctrl-C) or die (SIGKILL) does too.
func interruptApply(t *testing.T, ctx context.Context, inv string, re *regexp.Regexp, sig syscall.Signal) string {
	t.Helper()
	run := startApply(t, ctx, "-f", inv, "apply", "--auto-approve")
	matched := run.waitFor(re.MatchString)
	if !matched {
		out, err := run.wait()
		t.Fatalf("apply ended before printing a line matching %s: %v\n%s", re, err, out)
	}
	if err := run.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	out, err := run.wait()
	t.Logf("apply interrupted (%s) at %q: %s", sig, re, failureLine(out))
	if code := exitCode(err); (sig == syscall.SIGINT && code != 1) || (sig == syscall.SIGKILL && err == nil) {
		t.Errorf("apply interrupted with %s: %v\n%s", sig, err, out)
	}
	return out
}
