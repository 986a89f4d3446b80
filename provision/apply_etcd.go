package provision

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
)

// etcdPollInterval is how often a wait asks etcd again. The waits are
// bounded by ApplyOptions.WaitTimeout; the interval only keeps them from
// spinning.
const etcdPollInterval = 250 * time.Millisecond

// etcdOps carries out the etcd steps with go.etcd.io/etcd/client/v3, every
// connection tunnelled through SSH to the member's own host, so etcd's
// ports need not be open to the operator.
type etcdOps struct {
	a *applier

	mu  sync.Mutex
	cli *clientv3.Client
}

func (e *etcdOps) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cli != nil {
		e.cli.Close()
		e.cli = nil
	}
}

// etcdHosts are the inventory's external etcd hosts, wanted or leaving.
func (e *etcdOps) etcdHosts() []*inventory.Host {
	var out []*inventory.Host
	for _, name := range e.a.inv.Topology.EtcdMembers {
		if h := e.a.inv.Host(name); h != nil {
			out = append(out, h)
		}
	}
	return out
}

// dialer tunnels a connection to ADDR:PORT through the host with that
// address, or through the first etcd host that connects when the address is
// no inventory host's (a member kprov does not manage).
func (e *etcdOps) dialer() func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		var candidates []*inventory.Host
		for _, h := range e.a.inv.Hosts {
			if h.Address == host {
				candidates = append(candidates, h)
			}
		}
		if len(candidates) == 0 {
			candidates = e.etcdHosts()
		}
		var errs []error
		for _, h := range candidates {
			ex, err := e.a.conn.Connect(ctx, h)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			return ex.Dial(ctx, "tcp", addr)
		}
		return nil, fmt.Errorf("tunnel to %s: %w", addr, errors.Join(errs...))
	}
}

// newClient opens a client on the given endpoints. Connecting is lazy.
func (e *etcdOps) newClient(ctx context.Context, endpoints []string) (*clientv3.Client, error) {
	if e.a.opts.EtcdTLS == nil {
		return nil, errors.New("no etcd client TLS configuration (the state directory's healthcheck client)")
	}
	return clientv3.New(etcdClientConfig(ctx, endpoints, e.a.opts.EtcdTLS, DefaultEtcdTimeout, e.dialer()))
}

// etcdClientConfig is how kprov talks to etcd: through an SSH tunnel
// (dial), with its own TLS client, replies capped at maxEtcdReply, and no
// logger of the client's own (it would write to stderr).
func etcdClientConfig(ctx context.Context, endpoints []string, tlsCfg *tls.Config, timeout time.Duration, dial func(context.Context, string) (net.Conn, error)) clientv3.Config {
	return clientv3.Config{
		Endpoints:          endpoints,
		TLS:                tlsCfg.Clone(),
		DialTimeout:        timeout,
		DialOptions:        []grpc.DialOption{grpc.WithContextDialer(dial)},
		Logger:             zap.NewNop(),
		MaxCallRecvMsgSize: maxEtcdReply,
		Context:            ctx,
	}
}

// client is the run's shared client, balanced over every etcd host's client
// URL: members not started yet fail to connect and are skipped by the
// balancer until they answer.
func (e *etcdOps) client() (*clientv3.Client, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cli != nil {
		return e.cli, nil
	}
	var eps []string
	for _, h := range e.etcdHosts() {
		eps = append(eps, plan.EtcdClientURL(h.Address))
	}
	if len(eps) == 0 {
		return nil, errors.New("the inventory has no etcd hosts")
	}
	// The client outlives any one step's context; close() ends it.
	cli, err := e.newClient(context.Background(), eps)
	if err != nil {
		return nil, err
	}
	e.cli = cli
	return cli, nil
}

// peerURL is the step's member peer URL: the step's own when it has one, else
// the one kprov gives the member on its host.
func (e *etcdOps) peerURL(s plan.Step) (string, error) {
	if s.PeerURL != "" {
		return s.PeerURL, nil
	}
	h := e.a.inv.Host(s.Host)
	if h == nil {
		return "", fmt.Errorf("host %s is not in the inventory", s.Host)
	}
	return plan.EtcdPeerURL(h.Address), nil
}

// memberList lists members linearizably: a member cut off from the quorum
// must not answer with a stale list that makes a change look done.
func (e *etcdOps) memberList(ctx context.Context) (*clientv3.MemberListResponse, error) {
	cli, err := e.client()
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, DefaultEtcdTimeout)
	defer cancel()
	list, err := cli.MemberList(rctx)
	if err != nil {
		return nil, fmt.Errorf("etcd member list: %w", err)
	}
	return list, nil
}

// byPeerURL finds a member by its exact peer URL. Never a prefix or
// substring: 10.20.0.2 must not match 10.20.0.21 (RELIABILITY 4).
func byPeerURL(members []*etcdserverpb.Member, peer string) *etcdserverpb.Member {
	for _, m := range members {
		if slices.Contains(m.PeerURLs, peer) {
			return m
		}
	}
	return nil
}

// addLearner adds the member as a learner unless a member with its exact
// peer URL exists: after an interrupted run the add may already have taken
// effect, and adding twice would leave a second, never-starting member.
func (e *etcdOps) addLearner(ctx context.Context, s plan.Step) (bool, error) {
	peer, err := e.peerURL(s)
	if err != nil {
		return false, err
	}
	list, err := e.memberList(ctx)
	if err != nil {
		return false, err
	}
	if m := byPeerURL(list.Members, peer); m != nil {
		e.a.log.Info("etcd member already in the member list", "member", s.Member, "id", fmt.Sprintf("%x", m.ID), "learner", m.IsLearner)
		return false, nil
	}
	cli, err := e.client()
	if err != nil {
		return false, err
	}
	var resp *clientv3.MemberAddResponse
	err = e.retryUnhealthy(ctx, "add learner", func(ctx context.Context) error {
		var err error
		resp, err = cli.MemberAddAsLearner(ctx, []string{peer})
		return err
	})
	if err != nil {
		return false, fmt.Errorf("etcd member add as learner %s: %w", peer, err)
	}
	e.a.log.Info("etcd learner added", "member", s.Member, "id", fmt.Sprintf("%x", resp.Member.ID))
	return true, nil
}

// retryUnhealthy runs a membership change, retrying while etcd refuses it
// as "unhealthy cluster": with strict reconfiguration checks (on by
// default) etcd wants every voter connected for the last five seconds, so
// right after a promotion the next change is refused for a moment even
// though every member answers.
func (e *etcdOps) retryUnhealthy(ctx context.Context, what string, change func(context.Context) error) error {
	wctx, cancel := context.WithTimeout(ctx, e.a.opts.WaitTimeout)
	defer cancel()
	backoff := etcdPollInterval
	for {
		rctx, rcancel := context.WithTimeout(wctx, 2*DefaultEtcdTimeout)
		err := change(rctx)
		rcancel()
		if err == nil || !(errors.Is(err, rpctypes.ErrUnhealthy) || strings.Contains(err.Error(), "unhealthy cluster")) {
			return err
		}
		e.a.log.Debug("etcd refuses the change for now", "change", what, "err", err)
		select {
		case <-wctx.Done():
			return fmt.Errorf("still refused after %s: %w", e.a.opts.WaitTimeout, err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// retryablePromote reports errors etcd gives while a learner catches up, or
// while another learner is still being promoted (RELIABILITY 3).
func retryablePromote(err error) bool {
	return errors.Is(err, rpctypes.ErrMemberLearnerNotReady) || errors.Is(err, rpctypes.ErrTooManyLearners) ||
		strings.Contains(err.Error(), "in sync with leader") || strings.Contains(err.Error(), "too many learner")
}

// promote makes the learner a voter; a member that already votes is done.
func (e *etcdOps) promote(ctx context.Context, s plan.Step) (bool, error) {
	peer, err := e.peerURL(s)
	if err != nil {
		return false, err
	}
	wctx, cancel := context.WithTimeout(ctx, e.a.opts.WaitTimeout)
	defer cancel()
	backoff := etcdPollInterval
	for {
		list, err := e.memberList(wctx)
		if err != nil {
			return false, err
		}
		m := byPeerURL(list.Members, peer)
		if m == nil {
			return false, fmt.Errorf("no etcd member has peer URL %s: it was never added, or was removed", peer)
		}
		if !m.IsLearner {
			return false, nil
		}
		cli, err := e.client()
		if err != nil {
			return false, err
		}
		rctx, rcancel := context.WithTimeout(wctx, 2*DefaultEtcdTimeout)
		_, err = cli.MemberPromote(rctx, m.ID)
		rcancel()
		if err == nil {
			e.a.log.Info("etcd learner promoted", "member", s.Member, "id", fmt.Sprintf("%x", m.ID))
			return true, nil
		}
		if !retryablePromote(err) && !errors.Is(err, rpctypes.ErrUnhealthy) && !strings.Contains(err.Error(), "unhealthy cluster") {
			return false, fmt.Errorf("etcd member promote %x: %w", m.ID, err)
		}
		e.a.log.Debug("etcd learner not ready for promotion", "member", s.Member, "err", err)
		select {
		case <-wctx.Done():
			return false, fmt.Errorf("etcd member promote %x: still refused after %s: %w", m.ID, e.a.opts.WaitTimeout, err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 4*time.Second)
	}
}

// remove removes the member found by its exact peer URL; absent means done.
func (e *etcdOps) remove(ctx context.Context, s plan.Step) (bool, error) {
	peer, err := e.peerURL(s)
	if err != nil {
		return false, err
	}
	list, err := e.memberList(ctx)
	if err != nil {
		return false, err
	}
	m := byPeerURL(list.Members, peer)
	if m == nil {
		return false, nil
	}
	if s.MemberID != 0 && m.ID != s.MemberID {
		// The planned member is gone and another now has its peer URL
		// (added since the facts were read): not the member the plan
		// removes.
		return false, fmt.Errorf("the member at %s is %x, not %x as planned: run kprov again to plan from the current members", peer, m.ID, s.MemberID)
	}
	cli, err := e.client()
	if err != nil {
		return false, err
	}
	err = e.retryUnhealthy(ctx, "remove member", func(ctx context.Context) error {
		_, err := cli.MemberRemove(ctx, m.ID)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("etcd member remove %x (%s): %w", m.ID, peer, err)
	}
	return true, nil
}

// memberStatus asks one member, on its own client URL, for its status.
func (e *etcdOps) memberStatus(ctx context.Context, m *etcdserverpb.Member) (*clientv3.StatusResponse, error) {
	cli, err := e.client()
	if err != nil {
		return nil, err
	}
	if len(m.ClientURLs) == 0 {
		return nil, fmt.Errorf("member %s has not started (no client URL)", memberName(m))
	}
	rctx, cancel := context.WithTimeout(ctx, DefaultEtcdTimeout)
	defer cancel()
	return cli.Status(rctx, m.ClientURLs[0])
}

func memberName(m *etcdserverpb.Member) string {
	if m.Name != "" {
		return m.Name
	}
	return fmt.Sprintf("%x", m.ID)
}

// moveLeader moves leadership away from the step's member when it leads, to
// a healthy voter, asking the leader itself (only the leader can hand over).
func (e *etcdOps) moveLeader(ctx context.Context, s plan.Step) (bool, error) {
	peer, err := e.peerURL(s)
	if err != nil {
		return false, err
	}
	list, err := e.memberList(ctx)
	if err != nil {
		return false, err
	}
	self := byPeerURL(list.Members, peer)
	if self == nil {
		return false, nil // not a member: it cannot lead
	}
	st, err := e.memberStatus(ctx, self)
	if err != nil {
		return false, fmt.Errorf("etcd status of %s: %w", s.Member, err)
	}
	if st.Leader != self.ID {
		return false, nil
	}
	var target *etcdserverpb.Member
	for _, m := range list.Members {
		if m.ID == self.ID || m.IsLearner {
			continue
		}
		if ms, err := e.memberStatus(ctx, m); err == nil && ms.Header.GetClusterId() == list.Header.GetClusterId() && ms.Leader == self.ID {
			target = m
			break
		}
	}
	if target == nil {
		return false, fmt.Errorf("%s leads and no other healthy voting member can take over", s.Member)
	}
	cli, err := e.newClient(ctx, self.ClientURLs[:1])
	if err != nil {
		return false, err
	}
	defer cli.Close()
	rctx, cancel := context.WithTimeout(ctx, 2*DefaultEtcdTimeout)
	defer cancel()
	if _, err := cli.MoveLeader(rctx, target.ID); err != nil {
		return false, fmt.Errorf("etcd move leader from %s to %s: %w", s.Member, memberName(target), err)
	}
	return true, nil
}

// checkHealthy is nil when every named voter is a voting member, answers on
// its own client URL for the same cluster, and all of them follow one
// leader; otherwise a healthProblems naming each voter that is not (or the
// cluster as a whole, when its member list cannot be had).
func (e *etcdOps) checkHealthy(ctx context.Context, voters []string) error {
	list, err := e.memberList(ctx)
	if err != nil {
		return healthProblems{{text: err.Error()}}
	}
	leaders := map[uint64]bool{}
	var problems healthProblems
	add := func(name, format string, args ...any) {
		problems = append(problems, healthProblem{member: name, text: name + " " + fmt.Sprintf(format, args...)})
	}
	for _, name := range voters {
		h := e.a.inv.Host(name)
		if h == nil {
			add(name, "is not in the inventory")
			continue
		}
		m := byPeerURL(list.Members, plan.EtcdPeerURL(h.Address))
		switch {
		case m == nil:
			add(name, "is not a member")
			continue
		case m.IsLearner:
			add(name, "is still a learner")
			continue
		}
		st, err := e.memberStatus(ctx, m)
		switch {
		case err != nil:
			add(name, "does not answer: %v", err)
		case st.Header.GetClusterId() != list.Header.GetClusterId():
			add(name, "answers for another cluster (%x, not %x)", st.Header.GetClusterId(), list.Header.GetClusterId())
		case st.Header.GetMemberId() != m.ID:
			add(name, "answers as member %x, not %x", st.Header.GetMemberId(), m.ID)
		case st.Leader == 0:
			add(name, "has no leader")
		default:
			leaders[st.Leader] = true
		}
	}
	if len(problems) == 0 && len(leaders) > 1 {
		problems = append(problems, healthProblem{text: fmt.Sprintf("the members follow %d different leaders", len(leaders))})
	}
	if len(problems) > 0 {
		return problems
	}
	return nil
}

// healthProblem is one voter that is not healthy (member "" when the
// problem is the cluster's as a whole).
type healthProblem struct{ member, text string }

// healthProblems is what checkHealthy found.
type healthProblems []healthProblem

func (p healthProblems) Error() string {
	texts := make([]string, len(p))
	for i, x := range p {
		texts[i] = x.text
	}
	return strings.Join(texts, "; ")
}

// otherDownGrace is how long a health wait lets a voter its stage did
// not start or change stay unhealthy before it stops. The members the
// stage just started (plan.Step.Starting) get the whole wait timeout;
// another one was not touched by the stage, so its being down is news the
// operator must act on, and waiting longer would not bring it back.
const otherDownGrace = time.Minute

// downWatch follows, poll after poll, which voters other than the
// starting ones have been unhealthy without a break, and since when.
type downWatch struct {
	starting []string
	grace    time.Duration
	since    map[string]time.Time
}

// observe records one poll's problems at now and returns the voters,
// starting ones aside, that have been unhealthy for the grace period or
// longer, in name order.
func (w *downWatch) observe(now time.Time, problems healthProblems) []string {
	if w.since == nil {
		w.since = map[string]time.Time{}
	}
	seen := map[string]bool{}
	for _, p := range problems {
		if p.member == "" || slices.Contains(w.starting, p.member) {
			continue
		}
		seen[p.member] = true
		if _, ok := w.since[p.member]; !ok {
			w.since[p.member] = now
		}
	}
	var down []string
	for name, since := range w.since {
		switch {
		case !seen[name]:
			delete(w.since, name)
		case now.Sub(since) >= w.grace:
			down = append(down, name)
		}
	}
	slices.Sort(down)
	return down
}

// stopPolling ends a poll at once with err: waiting longer cannot help.
type stopPolling struct{ err error }

func (s *stopPolling) Error() string { return s.err.Error() }

// poll calls check until it returns nil or the run's wait timeout passes,
// or at once when check returns a *stopPolling.
func (e *etcdOps) poll(ctx context.Context, what string, check func(context.Context) error) error {
	wctx, cancel := context.WithTimeout(ctx, e.a.opts.WaitTimeout)
	defer cancel()
	for {
		err := check(wctx)
		if err == nil {
			return nil
		}
		if stop, ok := errors.AsType[*stopPolling](err); ok {
			return stop.err
		}
		e.a.log.Debug("waiting", "for", what, "now", err)
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%s: not after %s: %w", what, e.a.opts.WaitTimeout, err)
		case <-time.After(etcdPollInterval):
		}
	}
}

// waitHealthy waits until the step's voters are healthy (RELIABILITY 1, 2).
// A voter the stage did not start (not in s.Starting) that stays
// unhealthy for otherDownGrace stops the wait (and so the apply) with
// what to do: no later stage may take another member down while it is.
func (e *etcdOps) waitHealthy(ctx context.Context, s plan.Step) error {
	w := &downWatch{starting: s.Starting, grace: min(otherDownGrace, e.a.opts.WaitTimeout)}
	return e.poll(ctx, "etcd healthy", func(ctx context.Context) error {
		err := e.checkHealthy(ctx, s.Voters)
		problems, ok := errors.AsType[healthProblems](err)
		if !ok {
			return err
		}
		if down := w.observe(time.Now(), problems); len(down) > 0 {
			return &stopPolling{othersDown(down, w.grace, problems)}
		}
		return err
	})
}

// othersDown is the error that stops a health wait on voters that were
// down for grace: which, why, and what the operator does next.
func othersDown(down []string, grace time.Duration, problems healthProblems) error {
	var why []string
	for _, p := range problems {
		if slices.Contains(down, p.member) {
			why = append(why, p.text)
		}
	}
	names := strings.Join(down, ", ")
	return fmt.Errorf("etcd member %s not healthy for %s (%s); this stage did not touch it, and a member restarts or changes only while every other voter is healthy, "+
		"so kprov stopped here and restarted nothing else: bring %s back (its machine up, then `systemctl status etcd` there), then run kprov apply again, which goes on from here",
		names, grace, strings.Join(why, "; "), names)
}

// caughtUpRatio is how much of the leader's log a learner must hold: etcd
// refuses promotion below about 90%.
const caughtUpRatio = 0.9

// waitCaughtUp waits until the step's member holds the leader's log: a
// learner nearly all of it (caughtUpRatio, what etcd wants before a
// promotion); a voting member, after a restart, everything the leader had
// applied when it was asked. The leader is asked before the member each
// time, so under a steady stream of writes the member can meet the mark.
// The leader itself has nothing to catch up to.
func (e *etcdOps) waitCaughtUp(ctx context.Context, s plan.Step) error {
	peer, err := e.peerURL(s)
	if err != nil {
		return err
	}
	return e.poll(ctx, "etcd member caught up", func(ctx context.Context) error {
		list, err := e.memberList(ctx)
		if err != nil {
			return err
		}
		m := byPeerURL(list.Members, peer)
		if m == nil {
			return fmt.Errorf("no member has peer URL %s", peer)
		}
		role := "member"
		if m.IsLearner {
			role = "learner"
		}
		st, err := e.memberStatus(ctx, m)
		if err != nil {
			return fmt.Errorf("%s %s does not answer: %w", role, s.Member, err)
		}
		if st.Leader == m.ID {
			return nil
		}
		var leader *etcdserverpb.Member
		for _, x := range list.Members {
			if x.ID == st.Leader {
				leader = x
			}
		}
		if leader == nil {
			return fmt.Errorf("%s %s knows no leader yet", role, s.Member)
		}
		ls, err := e.memberStatus(ctx, leader)
		if err != nil {
			return fmt.Errorf("leader %s does not answer: %w", memberName(leader), err)
		}
		if m.IsLearner {
			if float64(st.RaftAppliedIndex) < caughtUpRatio*float64(ls.RaftIndex) {
				return fmt.Errorf("learner %s applied %d of the leader's %d entries", s.Member, st.RaftAppliedIndex, ls.RaftIndex)
			}
			return nil
		}
		// Asked after the leader: its applied index now against the leader's then.
		if st, err = e.memberStatus(ctx, m); err != nil {
			return fmt.Errorf("member %s does not answer: %w", s.Member, err)
		}
		if st.RaftAppliedIndex < ls.RaftAppliedIndex {
			return fmt.Errorf("member %s applied %d, the leader %s %d", s.Member, st.RaftAppliedIndex, memberName(leader), ls.RaftAppliedIndex)
		}
		return nil
	})
}
