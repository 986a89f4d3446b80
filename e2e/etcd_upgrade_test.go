//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/charmbracelet/log"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kprov/kprov/lab"
)

// upgradeFrom is the etcd release the upgrade test forms its cluster with,
// one patch below the lab's (lab.DefaultEtcdVersion); lab.BuildEtcd builds
// it into the artifact cache the first time.
const upgradeFrom = "3.6.15"

// upgradeSpecs is the smallest external-etcd lab: the fault lab's three
// members and the master an inventory needs (it takes workloads; nothing
// else joins), without its compute node.
func upgradeSpecs() []lab.MachineSpec {
	return slices.DeleteFunc(faultSpecs(), func(m lab.MachineSpec) bool { return m.Name == "compute-1" })
}

// TestEtcdRollingUpgrade forms external etcd at upgradeFrom, then changes
// the inventory to lab.DefaultEtcdVersion with its artifacts and applies
// while a writer puts keys and a watcher polls every member's status:
//
//   - the upgrade is interrupted three times: killed (SIGKILL) in its
//     prepare stage, which restarts nobody; stopped (SIGINT) once the
//     first member is upgraded, when kprov status shows the members'
//     versions side by side; killed as the next member's upgrade begins.
//     The next apply (over the killed run's stale lock) finishes the
//     upgrade without restarting a member that already runs the new
//     version;
//   - the new binaries reached every member (the prepare stage) before the
//     first restart, members were upgraded one at a time (each stage done
//     before the next began, never two members unanswering at once in
//     etcd's status), the leader of the moment last;
//   - every write etcd acknowledged reads back, the member IDs are the
//     same, every member reports the new version, and a second apply has
//     nothing to do.
func TestEtcdRollingUpgrade(t *testing.T) {
	runsBeside(t, false)
	to := lab.DefaultEtcdVersion
	l := UpLab(t, upgradeSpecs())
	inv := l.InventoryPath()
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	oldArts, err := lab.BuildEtcd(ctx, artifactsDir(t), upgradeFrom, log.New(os.Stderr))
	if err != nil {
		t.Fatalf("build etcd %s: %v", upgradeFrom, err)
	}
	newInv, err := os.ReadFile(inv)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, inv, withEtcdRelease(t, string(newInv), upgradeFrom, oldArts))

	// 1. The cluster at the old release.
	out, err := kprovErr(t, "-f", inv, "apply", "--auto-approve")
	assertApplied(t, out, err)
	ids := checkEtcd(t, ctx, l, inv)
	cli := etcdClient(t, ctx, l, inv)
	defer cli.Close()
	assertVersions(t, ctx, cli, map[string]string{"etcd-1": upgradeFrom, "etcd-2": upgradeFrom, "etcd-3": upgradeFrom})

	// 2. The new release, under load, interrupted three times: killed
	// (SIGKILL) as the prepare stage uploads the new binaries, which
	// restarts no member; stopped with Ctrl-C once the first member is
	// upgraded; killed as the next member's upgrade begins.
	writeFile(t, inv, string(newInv))
	load := startEtcdLoad(t, ctx, l, inv)
	run := startApplyUntil(t, ctx, "[prepare] preparing hosts", "-f", inv, "apply", "--auto-approve")
	if err := run.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed, _ := run.wait()
	if strings.Contains(killed, "[etcd] upgrading member ") {
		t.Errorf("the run killed in its prepare stage had begun an upgrade:\n%s", killed)
	}
	for m, v := range waitMemberVersions(t, ctx, cli) {
		if v != upgradeFrom {
			t.Errorf("%s runs %s after a run killed in its prepare stage", m, v)
		}
	}
	waitStaleLock(t, inv)
	leader := leaderName(t, ctx, cli)
	run = startApplyUntil(t, ctx, "[etcd] upgrading member ", "-f", inv, "apply", "--auto-approve", "--break-lock")
	if !run.waitLine("[etcd] upgrading member ") { // the first one's done line
		out, err := run.wait()
		t.Fatalf("the upgrade ended before its first member was done: %v\n%s", err, out)
	}
	if err := run.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	first, err := run.wait()
	t.Logf("interrupted upgrade: %s", failureLine(first))
	if exitCode(err) != 1 {
		t.Errorf("the interrupted upgrade: %v, want exit 1", err)
	}
	firstDone := upgradeStages(t, first, true)
	if len(firstDone) == 0 || slices.Contains(firstDone, leader) {
		t.Fatalf("the interrupted apply upgraded %v (leader %s): want a member other than the leader first\n%s", firstDone, leader, first)
	}
	status, _ := kprovErr(t, "-f", inv, "status")
	if !strings.Contains(status, "members run different versions (") || !strings.Contains(status, to+" on ") || !strings.Contains(status, upgradeFrom+" on ") {
		t.Errorf("kprov status in the middle of the upgrade does not show both versions:\n%s", status)
	}
	run = startApplyUntil(t, ctx, "[etcd] upgrading member ", "-f", inv, "apply", "--auto-approve")
	if err := run.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed, _ = run.wait()
	if done := upgradeStages(t, killed, true); len(done) > 0 || slices.Contains(firstDone, upgradingMember(killed)) {
		t.Errorf("the run killed as an upgrade began upgraded %v and began %s (the Ctrl-C run upgraded %v)", done, upgradingMember(killed), firstDone)
	}
	t.Logf("killed as the upgrade of %s began", upgradingMember(killed))
	running := waitMemberVersions(t, ctx, cli)
	// The interrupted runs may have moved leadership off the member they
	// restarted last; the re-run's facts show the leader of now.
	leaderNow := leaderName(t, ctx, cli)

	// 3. The re-run finishes it.
	out, err = applyOverStaleLock(t, inv)
	assertApplied(t, out, err)
	figures := load.stop()
	t.Logf("writes during the upgrade: %s", figures)
	second := upgradeStages(t, out, false)
	t.Logf("leader %s before the upgrade; the interrupted run upgraded %v, the members then ran %v; the re-run (leader %s) upgraded %v",
		leader, firstDone, running, leaderNow, second)
	for _, m := range second {
		if running[m] == to {
			t.Errorf("the re-run restarted %s, which already ran %s", m, to)
		}
	}
	for m, v := range running {
		if v != to && !slices.Contains(second, m) {
			t.Errorf("the re-run left %s at %s", m, v)
		}
	}
	switch n := len(second); {
	case n == 0:
		t.Errorf("the re-run upgraded no member:\n%s", out)
	case running[leaderNow] != to && second[n-1] != leaderNow:
		t.Errorf("the re-run upgraded %v; want the leader %s last", second, leaderNow)
	}
	// The run killed in its prepare stage may, at the most, have uploaded
	// everything; otherwise the Ctrl-C run prepared the hosts before its
	// first restart.
	prepared := -1
	if loc := regexp.MustCompile(`(?m)^\[prepare\] preparing hosts: .*: done in `).FindStringIndex(first); loc != nil {
		prepared = loc[0]
	}
	if strings.Contains(first, "[prepare] preparing hosts") && (prepared < 0 || prepared > strings.Index(first, "[etcd] upgrading member ")) {
		t.Errorf("the first restart came before the prepare stage had uploaded the binaries:\n%s", first)
	}
	if figures.maxDown > 1 {
		t.Errorf("etcd's status showed %d members not answering at once during the upgrade", figures.maxDown)
	}
	load.verify(t, ctx, cli)
	assertVersions(t, ctx, cli, map[string]string{"etcd-1": to, "etcd-2": to, "etcd-3": to})
	if again := checkEtcd(t, ctx, l, inv); !slices.Equal(again, ids) {
		t.Errorf("member IDs changed from %x to %x", ids, again)
	}
	status = kprov(t, "-f", inv, "status")
	for _, m := range []string{"etcd-1", "etcd-2", "etcd-3"} {
		row := regexp.MustCompile(`(?m)^` + m + `\s+[0-9a-f]+\s+voter\s+yes\s+(leader\s+)?` + regexp.QuoteMeta(to) + `\s`)
		if !row.MatchString(status) {
			t.Errorf("kprov status does not show %s as a healthy voter on %s:\n%s", m, to, status)
		}
	}
	if strings.Contains(status, "different versions") {
		t.Errorf("kprov status after the upgrade still sees different versions:\n%s", status)
	}

	// 4. Nothing left to do.
	out, err = kprovErr(t, "-f", inv, "apply", "--auto-approve")
	if err != nil || !strings.Contains(out, "No changes") {
		t.Errorf("apply after the upgrade: %v\n%s", err, out)
	}

	// 5. A configuration change that needs restarts, under load: every
	// member restarts once, one at a time, the leader last, and serves
	// with the new settings (its status reports the new backend quota).
	const quota = 4 << 30
	before := memberQuotas(t, ctx, cli)
	for m, q := range before {
		if q == quota {
			t.Fatalf("%s already has the quota the change sets: %v", m, before)
		}
	}
	writeFile(t, inv, withEtcdTuning(t, string(newInv), "200ms", "2s", "4GiB"))
	tuneLeader := leaderName(t, ctx, cli)
	tuneLoad := startEtcdLoad(t, ctx, l, inv)
	out, err = kprovErr(t, "-f", inv, "apply", "--auto-approve")
	assertApplied(t, out, err)
	tuneFigures := tuneLoad.stop()
	t.Logf("writes during the configuration change: %s", tuneFigures)
	restarted := rollStages(t, out, restartStageLine, false)
	if len(restarted) != 3 || restarted[2] != tuneLeader || len(slices.Compact(slices.Sorted(slices.Values(restarted)))) != 3 {
		t.Errorf("the configuration change restarted %v: want each of the 3 members once, the leader %s last\n%s", restarted, tuneLeader, out)
	}
	if tuneFigures.maxDown > 1 {
		t.Errorf("etcd's status showed %d members not answering at once during the configuration change", tuneFigures.maxDown)
	}
	tuneLoad.verify(t, ctx, cli)
	for m, q := range memberQuotas(t, ctx, cli) {
		if q != quota {
			t.Errorf("%s serves with a backend quota of %d bytes after the change, want %d", m, q, quota)
		}
	}
	out, err = kprovErr(t, "-f", inv, "apply", "--auto-approve")
	if err != nil || !strings.Contains(out, "No changes") {
		t.Errorf("apply after the configuration change: %v\n%s", err, out)
	}

	// 6. A difference in the settings etcd reads only when its data
	// directory is empty (a member's configuration back at
	// initial-cluster-state "new"): rewritten, and the member not restarted.
	pid := func() string {
		out, err := l.Output(ctx, "etcd-2", "systemctl show --property MainPID --value etcd")
		if err != nil || strings.TrimSpace(string(out)) == "0" {
			t.Fatalf("etcd-2's etcd process: %q, %v", out, err)
		}
		return strings.TrimSpace(string(out))
	}
	pidBefore := pid()
	if out, err := l.Output(ctx, "etcd-2", `sed -i 's/^initial-cluster-state: "existing"$/initial-cluster-state: "new"/' /etc/etcd/etcd.yaml && grep -c '^initial-cluster-state: "new"$' /etc/etcd/etcd.yaml`); err != nil {
		t.Fatalf("edit etcd-2's configuration: %v\n%s", err, out)
	}
	out, err = kprovErr(t, "-f", inv, "apply", "--auto-approve")
	assertApplied(t, out, err)
	if !strings.Contains(out, "recording the full member list") || strings.Contains(out, "restarting member") {
		t.Errorf("a bootstrap-only difference: want the configuration rewritten without a restart\n%s", out)
	}
	if after := pid(); after != pidBefore {
		t.Errorf("etcd-2's process changed from %s to %s: a bootstrap-only difference restarted it", pidBefore, after)
	}
	out, err = kprovErr(t, "-f", inv, "apply", "--auto-approve")
	if err != nil || !strings.Contains(out, "No changes") {
		t.Errorf("apply after the rewrite: %v\n%s", err, out)
	}
}

// withEtcdTuning is the lab inventory with the etcd block's heartbeat,
// election timeout and backend quota set.
func withEtcdTuning(t *testing.T, text, heartbeat, election, quota string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^etcd \{\n`)
	if !re.MatchString(text) {
		t.Fatalf("no etcd block in the lab inventory:\n%s", text)
	}
	return re.ReplaceAllString(text, fmt.Sprintf("etcd {\n  heartbeat_interval = %q\n  election_timeout = %q\n  quota_backend_bytes = %q\n", heartbeat, election, quota))
}

// memberQuotas is each member's backend quota as its status reports it.
func memberQuotas(t *testing.T, ctx context.Context, cli *clientv3.Client) map[string]int64 {
	t.Helper()
	list, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	quotas := map[string]int64{}
	for _, m := range list.Members {
		st, err := cli.Status(ctx, m.ClientURLs[0])
		if err != nil {
			t.Fatalf("status of %s: %v", m.Name, err)
		}
		quotas[m.Name] = st.DbSizeQuota
	}
	return quotas
}

// withEtcdRelease is the lab inventory with its etcd version and its etcd,
// etcdctl and etcdutl artifacts set to another release's.
func withEtcdRelease(t *testing.T, text, version string, arts []lab.Artifact) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^(\s*version\s*=\s*)"[^"]*"`)
	if !re.MatchString(text) {
		t.Fatalf("no etcd version in the lab inventory:\n%s", text)
	}
	text = re.ReplaceAllString(text, fmt.Sprintf("${1}%q", version))
	for _, a := range arts {
		line := regexp.MustCompile(`(?m)^(\s*` + regexp.QuoteMeta(a.Name) + `\s*=\s*)\{[^}\n]*\}`)
		if !line.MatchString(text) {
			t.Fatalf("no %s artifact in the lab inventory:\n%s", a.Name, text)
		}
		text = line.ReplaceAllString(text, fmt.Sprintf("${1}{ path = %q, sha256 = %q }", a.Path, a.SHA256))
	}
	return text
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// upgradeStageLine is an upgrade stage's line in apply's output;
// restartStageLine a configuration change's.
var (
	upgradeStageLine = regexp.MustCompile(`^\[etcd\] upgrading member (\S+): etcd \S+ to \S+( \.\.\.|: done in .*|: FAILED .*)$`)
	restartStageLine = regexp.MustCompile(`^\[etcd\] restarting member (\S+)( \.\.\.|: done in .*|: FAILED .*)$`)
)

// upgradingMember is the member whose upgrade stage began last in apply's
// output ("" when none did).
func upgradingMember(out string) string {
	member := ""
	for _, line := range strings.Split(out, "\n") {
		if m := upgradeStageLine.FindStringSubmatch(line); m != nil && m[2] == " ..." {
			member = m[1]
		}
	}
	return member
}

// upgradeStages reads the upgrade stages from apply's output and returns
// the members whose stage finished, in order. Each stage must begin only
// after the one before it is done (one member at a time); an interrupted
// run (interrupted) may end with one begun and not done.
func upgradeStages(t *testing.T, out string, interrupted bool) []string {
	t.Helper()
	return rollStages(t, out, upgradeStageLine, interrupted)
}

// rollStages reads a rolling restart's stages from apply's output by
// stageLine (the member first, then " ...", ": done ..." or ": FAILED
// ...") and returns the members whose stage finished, in order, checking
// that each began only after the one before it was done.
func rollStages(t *testing.T, out string, stageLine *regexp.Regexp, interrupted bool) []string {
	t.Helper()
	var done []string
	open := ""
	for _, line := range strings.Split(out, "\n") {
		m := stageLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		switch {
		case m[2] == " ...":
			if open != "" {
				t.Errorf("the upgrade of %s began while %s's was not done:\n%s", m[1], open, out)
			}
			open = m[1]
		case strings.HasPrefix(m[2], ": done"):
			if open != m[1] {
				t.Errorf("%s done without having begun (open: %q):\n%s", m[1], open, out)
			}
			done = append(done, m[1])
			open = ""
		default:
			open = ""
			if !interrupted {
				t.Errorf("the upgrade of %s failed:\n%s", m[1], out)
			}
		}
	}
	if open != "" && !interrupted {
		t.Errorf("the upgrade of %s never finished:\n%s", open, out)
	}
	return done
}

// leaderName is the member etcd reports as its leader.
func leaderName(t *testing.T, ctx context.Context, cli *clientv3.Client) string {
	t.Helper()
	list, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range list.Members {
		st, err := cli.Status(ctx, m.ClientURLs[0])
		if err == nil && st.Leader == m.ID {
			return m.Name
		}
	}
	t.Fatal("etcd reports no leader")
	return ""
}

// memberVersions is the server version each member reports, by name.
func memberVersions(t *testing.T, ctx context.Context, cli *clientv3.Client) map[string]string {
	t.Helper()
	list, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, m := range list.Members {
		st, err := cli.Status(ctx, m.ClientURLs[0])
		if err != nil {
			t.Errorf("%s: status: %v", m.Name, err)
			continue
		}
		out[m.Name] = st.Version
	}
	return out
}

// waitMemberVersions is memberVersions once every member answers: one an
// interrupted run restarted may still be starting.
func waitMemberVersions(t *testing.T, ctx context.Context, cli *clientv3.Client) map[string]string {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		list, err := cli.MemberList(ctx)
		if err == nil {
			out := map[string]string{}
			for _, m := range list.Members {
				if st, serr := cli.Status(ctx, m.ClientURLs[0]); serr == nil {
					out[m.Name] = st.Version
				}
			}
			if len(out) == len(list.Members) {
				return out
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("etcd members never all answered: %v", ctx.Err())
		case <-tick.C:
		}
	}
}

func assertVersions(t *testing.T, ctx context.Context, cli *clientv3.Client, want map[string]string) {
	t.Helper()
	if got := memberVersions(t, ctx, cli); !maps.Equal(got, want) {
		t.Errorf("members run %v, want %v", got, want)
	}
}
