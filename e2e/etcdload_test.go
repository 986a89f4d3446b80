//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/lab"
)

// etcdLoadPrefix is where the load writes its keys.
const etcdLoadPrefix = "/kprov-e2e/load/"

// etcdLoad is the load harness every day-2 etcd test runs beside the
// operation it tests. A writer puts a key with a unique value every 25 ms
// and records which puts etcd acknowledged and which failed; a watcher,
// every 100 ms, lists the members (so it follows members added and
// removed), asks each one for its status, and records how many were
// learners at once, how many did not answer at once, and the moments
// without a quorum of healthy voters. At the end verify reads every
// acknowledged key back.
type etcdLoad struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	acked   map[string]string
	failed  int
	lastAck time.Time
	// commits are the round trips (request sent, acknowledgement seen)
	// of the acknowledged writes, in the order they were sent.
	commits []span
	// suspects are the polls that found no quorum, in order.
	suspects []suspectPoll
	maxGap   time.Duration
	maxDown  int
	// maxLearners is the most learners one member list held.
	maxLearners int
	polls       int
	maxMembers  int
	minVoters   int
	lost        int
}

// loadFigures is what etcdLoad measured.
type loadFigures struct {
	acked, failed int
	// lost is acknowledged writes that did not read back (set once
	// verify has run; -1 before).
	lost        int
	maxGap      time.Duration
	maxDown     int
	maxLearners int
	// maxNoQuorum is the longest moment without a quorum of healthy
	// voters, noQuorumPolls the polls that saw one (0: never);
	// slowPolls found no quorum while a write committed inside them.
	maxNoQuorum   time.Duration
	noQuorumPolls int
	// noQuorumSeen says when each poll without quorum was and what it saw.
	noQuorumSeen []string
	slowPolls    int
	polls        int
	maxMembers   int
	minVoters    int
}

func (f loadFigures) String() string {
	lost := "not checked yet"
	if f.lost >= 0 {
		lost = fmt.Sprint(f.lost)
	}
	noQuorum := "none"
	if f.noQuorumPolls > 0 {
		noQuorum = fmt.Sprintf("%s (%d polls)", f.maxNoQuorum.Round(time.Millisecond), f.noQuorumPolls)
	}
	return fmt.Sprintf("%d acknowledged, %d failed, %s lost, longest gap without a write %s, at most %d member(s) not answering at once, "+
		"at most %d learner(s) at once, longest moment without a quorum of healthy voters: %s; %d status polls (%d without an answer while a write committed), at most %d members, at least %d voters",
		f.acked, f.failed, lost, f.maxGap.Round(time.Millisecond), f.maxDown, f.maxLearners, noQuorum, f.polls, f.slowPolls, f.maxMembers, f.minVoters)
}

// startEtcdLoad starts the writer (about 40 puts a second) and the status
// watcher (every member every 100 ms), each with its own etcd client.
func startEtcdLoad(t *testing.T, ctx context.Context, l *lab.Lab, inv string) *etcdLoad {
	t.Helper()
	lctx, cancel := context.WithCancel(ctx)
	ld := &etcdLoad{cancel: cancel, acked: map[string]string{}, lastAck: time.Now(), minVoters: -1, lost: -1}
	writer := etcdClient(t, lctx, l, inv)
	watcher := etcdClient(t, lctx, l, inv)
	if _, err := watcher.MemberList(ctx); err != nil {
		t.Fatal(err)
	}
	ld.wg.Go(func() {
		defer writer.Close()
		tick := time.NewTicker(25 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-lctx.Done():
				return
			case <-tick.C:
			}
			sent := time.Now()
			key, val := fmt.Sprintf("%s%06d", etcdLoadPrefix, i), fmt.Sprintf("v%d-%d", i, sent.UnixNano())
			pctx, pcancel := context.WithTimeout(lctx, 2*time.Second)
			_, err := writer.Put(pctx, key, val)
			pcancel()
			now := time.Now()
			ld.mu.Lock()
			if err == nil {
				ld.acked[key] = val
				ld.commits = append(ld.commits, span{sent, now})
				ld.maxGap = max(ld.maxGap, now.Sub(ld.lastAck))
				ld.lastAck = now
			} else if lctx.Err() == nil {
				ld.failed++
			}
			ld.mu.Unlock()
		}
	})
	ld.wg.Go(func() {
		defer watcher.Close()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-lctx.Done():
				return
			case <-tick.C:
			}
			ld.poll(lctx, watcher)
			if lctx.Err() != nil {
				return
			}
		}
	})
	t.Cleanup(func() { ld.stop() })
	return ld
}

// poll lists the members and asks each for its status, all at once.
// A member list that cannot be had (linearizably: it needs a leader and
// a quorum) is a moment without quorum; so is one in which fewer voters
// answer, following a leader, than the quorum of the voters listed.
func (ld *etcdLoad) poll(ctx context.Context, cli *clientv3.Client) {
	start := time.Now()
	// The poll's calls get as long as a write does (2 s): under a loaded
	// machine a linearizable member list can take over a second while
	// writes commit, and a longer poll holds a whole write's round trip.
	lctx, cancel := context.WithTimeout(ctx, pollTimeout)
	list, err := cli.MemberList(lctx)
	cancel()
	if ctx.Err() != nil {
		return
	}
	voters, healthy, learners, down := 0, 0, 0, 0
	var why []string // what kept members from counting, for a poll without quorum
	if err != nil {
		why = append(why, "member list: "+err.Error())
	} else {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, m := range list.Members {
			if m.IsLearner {
				learners++
			} else {
				voters++
			}
			if len(m.ClientURLs) == 0 {
				mu.Lock()
				down++ // added, not started yet
				why = append(why, m.Name+": not started")
				mu.Unlock()
				continue
			}
			wg.Go(func() {
				sctx, scancel := context.WithTimeout(ctx, pollTimeout)
				defer scancel()
				st, err := cli.Status(sctx, m.ClientURLs[0])
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					down++
					why = append(why, fmt.Sprintf("%s: %v", m.Name, err))
				case st.Leader == 0:
					down++
					why = append(why, m.Name+": no leader")
				case st.Header.GetClusterId() != list.Header.GetClusterId():
					down++
					why = append(why, m.Name+": another cluster")
				case !m.IsLearner:
					healthy++
				}
			})
		}
		wg.Wait()
		if ctx.Err() != nil {
			return
		}
	}
	// The poll spans the member list and every status call: a write
	// committed inside that span proves a quorum then (judgeQuorum).
	end := time.Now()
	ld.mu.Lock()
	defer ld.mu.Unlock()
	ld.polls++
	quorate := err == nil && healthy >= inventory.Quorum(voters)
	if err == nil {
		ld.maxDown = max(ld.maxDown, down)
		ld.maxLearners = max(ld.maxLearners, learners)
		ld.maxMembers = max(ld.maxMembers, len(list.Members))
		if ld.minVoters < 0 || voters < ld.minVoters {
			ld.minVoters = voters
		}
	}
	if !quorate {
		slices.Sort(why)
		ld.suspects = append(ld.suspects, suspectPoll{span: span{start, end}, index: ld.polls,
			detail: fmt.Sprintf("%d of %d voters healthy: %s", healthy, voters, strings.Join(why, "; "))})
	}
}

// pollTimeout bounds each call of a status poll.
const pollTimeout = 2 * time.Second

// span is a stretch of time.
type span struct{ from, to time.Time }

// within reports whether s lies wholly inside o.
func (s span) within(o span) bool { return !s.from.Before(o.from) && !s.to.After(o.to) }

// suspectPoll is a poll that found no quorum; index counts the polls,
// detail says what it saw.
type suspectPoll struct {
	span
	index  int
	detail string
}

// judgeQuorum splits the suspect polls into slow ones (a write's whole
// round trip lies inside the poll: a quorum committed it) and ones
// without quorum, and returns the latter's count and longest moment:
// consecutive polls without quorum make one moment, from the first one's
// start to the last one's end. commits are in the order sent, so their
// start times are sorted.
func judgeQuorum(suspects []suspectPoll, commits []span) (noQuorum, slow int, longest time.Duration, seen []string) {
	var moment span
	lastIndex := -2
	for _, p := range suspects {
		i, _ := slices.BinarySearchFunc(commits, p.from, func(c span, t time.Time) int { return c.from.Compare(t) })
		if i < len(commits) && commits[i].within(p.span) {
			slow++
			continue
		}
		noQuorum++
		seen = append(seen, fmt.Sprintf("at %s for %s: %s", p.from.Format("15:04:05.000"), p.to.Sub(p.from).Round(time.Millisecond), p.detail))
		if p.index != lastIndex+1 {
			moment.from = p.from
		}
		moment.to = p.to
		lastIndex = p.index
		longest = max(longest, moment.to.Sub(moment.from))
	}
	return noQuorum, slow, longest, seen
}

// stop ends the writer and the watcher and returns the figures.
func (ld *etcdLoad) stop() loadFigures {
	ld.cancel()
	ld.wg.Wait()
	return ld.figures()
}

func (ld *etcdLoad) figures() loadFigures {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	noQuorum, slow, longest, seen := judgeQuorum(ld.suspects, ld.commits)
	return loadFigures{acked: len(ld.acked), failed: ld.failed, lost: ld.lost, maxGap: ld.maxGap, maxDown: ld.maxDown,
		maxLearners: ld.maxLearners, maxNoQuorum: longest, noQuorumPolls: noQuorum, noQuorumSeen: seen, slowPolls: slow, polls: ld.polls,
		maxMembers: ld.maxMembers, minVoters: max(ld.minVoters, 0)}
}

// verify reads every acknowledged key back, linearizably: none may be
// lost or hold another value. The figures count what was lost.
func (ld *etcdLoad) verify(t *testing.T, ctx context.Context, cli *clientv3.Client) {
	t.Helper()
	resp, err := cli.Get(ctx, etcdLoadPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range resp.Kvs {
		got[string(kv.Key)] = string(kv.Value)
	}
	ld.mu.Lock()
	defer ld.mu.Unlock()
	if len(ld.acked) < 100 {
		t.Errorf("only %d writes were acknowledged: the load did not run", len(ld.acked))
	}
	lost := 0
	for k, v := range ld.acked {
		if got[k] != v {
			lost++
			if lost <= 5 {
				t.Errorf("acknowledged write %s=%s reads back as %q", k, v, got[k])
			}
		}
	}
	ld.lost = lost
	if lost > 0 {
		t.Errorf("%d of %d acknowledged writes lost", lost, len(ld.acked))
	}
	if ld.polls == 0 {
		t.Error("the status watcher never polled")
	}
}

// assertPlanned checks the figures a planned operation must keep: never
// more than one learner, never a moment without a quorum of healthy
// voters, no acknowledged write lost (verify must have run).
func assertPlanned(t *testing.T, f loadFigures) {
	t.Helper()
	if f.maxLearners > 1 {
		t.Errorf("etcd listed %d learners at once", f.maxLearners)
	}
	if f.noQuorumPolls > 0 {
		t.Errorf("%d status polls saw no quorum of healthy voters, the longest moment %s:\n%s", f.noQuorumPolls, f.maxNoQuorum.Round(time.Millisecond), strings.Join(f.noQuorumSeen, "\n"))
	}
	if f.lost != 0 {
		t.Errorf("%d acknowledged writes lost (verify run: %v)", f.lost, f.lost >= 0)
	}
}

// TestJudgeQuorum checks how the harness judges polls that found no
// quorum: one with a write's whole round trip inside it is slow, not
// quorum-less; a write that only overlaps it proves nothing; consecutive
// quorum-less polls make one moment.
func TestJudgeQuorum(t *testing.T) {
	at := func(ms int) time.Time { return time.Unix(0, 0).Add(time.Duration(ms) * time.Millisecond) }
	commits := []span{{at(0), at(50)}, {at(120), at(180)}, {at(950), at(1100)}, {at(2000), at(2040)}}
	suspects := []suspectPoll{
		{span{at(100), at(1100)}, 3, "etcd-2: timeout"},    // holds 120-180: slow
		{span{at(1000), at(1500)}, 7, "etcd-2: timeout"},   // 950-1100 starts before it: no quorum
		{span{at(1600), at(1900)}, 8, "etcd-2: no leader"}, // nothing inside: no quorum, same moment
		{span{at(2050), at(2100)}, 10, "etcd-3: refused"},
	}
	noQuorum, slow, longest, seen := judgeQuorum(suspects, commits)
	if noQuorum != 3 || slow != 1 || longest != 900*time.Millisecond {
		t.Errorf("judgeQuorum: %d without quorum, %d slow, longest %s; want 3, 1, 900ms", noQuorum, slow, longest)
	}
	if len(seen) != 3 || !strings.Contains(seen[0], "for 500ms: ") {
		t.Errorf("judgeQuorum's account of the polls without quorum: %q", seen)
	}
	if n, s, l, _ := judgeQuorum(nil, commits); n != 0 || s != 0 || l != 0 {
		t.Errorf("judgeQuorum with no suspects: %d, %d, %s", n, s, l)
	}
}
