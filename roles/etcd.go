package roles

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
)

// EtcdTarget is an external etcd member the inventory wants, as rendered.
// The planner needs only its name and peer URL.
type EtcdTarget struct {
	Name      string // the host name, which is also the member name
	PeerURL   string // https://ADDRESS:2380
	ClientURL string // https://ADDRESS:2379
	// Bootstrap is how the member finds its cluster when its data directory is empty.
	Bootstrap EtcdBootstrap
}

// EtcdInput is what PlanEtcd needs: the live membership (empty for a new
// cluster), the wanted members in inventory order, and how to render a
// member's configuration for a given initial cluster and state.
type EtcdInput struct {
	Live []plan.EtcdMember
	Want []EtcdTarget
	// Hosts are the names of every inventory host, etcd or not: a live
	// member whose self-reported name is one of them while its peer URL is
	// another's is refused (RELIABILITY 19).
	Hosts   []string
	DataDir string
	Service string
	Config  func(member EtcdTarget, initialCluster []EtcdTarget, state string) File
	// Normalize strips the settings etcd reads only when it bootstraps its data
	// directory (initial-cluster, initial-cluster-state), so a change to them
	// alone is written without a restart. Nil compares whole files.
	Normalize func([]byte) []byte
	// Version is the etcd version the inventory wants (etcd.version); a
	// live member running a version etcd cannot go from to this one in a
	// rolling restart is refused (checkVersionJump). "" checks nothing.
	Version string
	// Binaries is the etcd binary on each wanted member's host, by host
	// name; a member whose process does not run what the plan leaves there
	// is restarted in the roll (rollConfig).
	Binaries map[string]EtcdBinary
	// Certs are, by host, the member certificate files (etcd/server.*,
	// etcd/peer.*) a running member's host must get because they differ
	// there (a renewal): they are uploaded in that member's rolling restart,
	// one member at a time, never all at once in the prepare stage.
	Certs map[string][]File
}

// EtcdBinary is the etcd binary on a member's host as the planner sees it.
type EtcdBinary struct {
	// Replaced: the plan's prepare stage, which runs before any etcd stage,
	// uploads the inventory's etcd artifact over a different file there.
	// The upload renames a new file into place, so the running process
	// keeps the old binary's inode until it restarts.
	Replaced bool
	// Version is what the host's binary printed (`etcd --version`) when the
	// facts were gathered, "" when unknown.
	Version string
}

// Initial cluster states, as etcd's initial-cluster-state takes them.
const (
	StateNew      = "new"
	StateExisting = "existing"
)

// RefusalError is a plan that cannot be made safely: it names the member,
// what was observed and what a person can do.
type RefusalError struct {
	Member   string
	Observed string
	Action   string
}

func (e *RefusalError) Error() string {
	return fmt.Sprintf("etcd member %s: %s; %s", e.Member, e.Observed, e.Action)
}

// planState is the membership as the plan will have left it after the
// stages emitted so far; the planner orders steps by replaying them on it.
type planState struct {
	members []*planMember
}

type planMember struct {
	plan.EtcdMember
	added bool // its configuration is rewritten in finalize (added by this plan, or only bootstrap settings differ)
	// started: stopped when the facts were gathered and started by this
	// plan, after the prepare stage, so it already runs the binary the plan
	// leaves on its host.
	started bool
}

func (s *planState) voters() []*planMember {
	var out []*planMember
	for _, m := range s.members {
		if !m.Learner {
			out = append(out, m)
		}
	}
	return out
}

func (s *planState) healthyVoters() int {
	n := 0
	for _, m := range s.voters() {
		if m.Healthy {
			n++
		}
	}
	return n
}

func names(ms []*planMember) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}

// hostsOf names the members by their hosts, as a wait's voters: apply finds
// each voter by its inventory host's address, so a member on no inventory
// host cannot be waited for by name and is left out.
func hostsOf(ms []*planMember) []string {
	var out []string
	for _, m := range ms {
		if m.Host != "" && !m.Departing {
			out = append(out, m.Host)
		}
	}
	return out
}

func quorumNote(voting int) string {
	return fmt.Sprintf("%d voting, quorum %d, tolerates %d", voting, inventory.Quorum(voting), inventory.FaultTolerance(voting))
}

// PlanEtcd orders the etcd membership changes from the live cluster to the
// wanted one so that the healthy voting members form a majority after every
// step and at most one member is ever in transition:
//
//   - a new cluster starts with its first member alone; every other member
//     joins as a learner, one at a time, and is promoted once caught up;
//   - stopped members start together, so a cold start never waits one by one
//     for a quorum that cannot form;
//   - dead members leaving the cluster are removed before anything is added;
//   - healthy members leaving are removed one at a time after the members
//     replacing them are voting, with leadership moved away first;
//   - configuration changes restart one member at a time, the leader last;
//   - every step addressed to a live member's host goes to the host its
//     peer URL names (plan.EtcdMember.Host), never to the one its name
//     suggests; a member on no inventory host is removed through the
//     cluster with nothing stopped or wiped (RELIABILITY 19).
func PlanEtcd(in EtcdInput) ([]plan.Stage, []string, error) {
	if len(in.Want) == 0 && len(in.Live) == 0 {
		return nil, nil, nil
	}
	want := map[string]EtcdTarget{}
	for _, t := range in.Want {
		want[t.PeerURL] = t
	}
	st := &planState{}
	seen := map[string]bool{}
	for _, m := range in.Live {
		if seen[m.PeerURL] {
			return nil, nil, &RefusalError{Member: m.Name, Observed: fmt.Sprintf("two members share peer URL %s", m.PeerURL),
				Action: "remove the stale one with etcdctl member remove before running kprov again"}
		}
		seen[m.PeerURL] = true
		st.members = append(st.members, &planMember{EtcdMember: m})
	}

	p := &etcdPlanner{in: in, st: st, want: want, certsRolled: map[string]bool{}}
	if err := p.checkHosts(); err != nil {
		return nil, nil, err
	}
	if err := p.checkVersions(); err != nil {
		return nil, nil, err
	}
	if len(st.members) == 0 {
		p.bootstrap()
	} else if err := p.recover(); err != nil {
		return nil, nil, err
	}
	if err := p.changeMembership(); err != nil {
		return nil, nil, err
	}
	p.rollConfig()
	p.leftoverCerts()
	p.finalize()
	return p.stages, p.notes, nil
}

// checkHosts refuses live members that kprov cannot tie to exactly one host:
// a member whose self-reported name is one inventory host's while its peer
// URL is another's (a step addressed by name would stop and wipe the wrong
// one), a wanted peer URL tied to another host, two members on one host, and
// a healthy member that shares its name with another, which no initial-cluster
// can list and which kprov will not remove on a guess. A dead namesake is
// removed first instead (recover).
func (p *etcdPlanner) checkHosts() error {
	inventoryHost := map[string]bool{}
	for _, h := range p.in.Hosts {
		inventoryHost[h] = true
	}
	for _, t := range p.in.Want {
		inventoryHost[t.Name] = true
	}
	onHost := map[string]*planMember{}
	for _, m := range p.st.members {
		id := m.Name
		if m.ID != 0 {
			id += fmt.Sprintf(" (ID %x)", m.ID)
		}
		if m.Host != "" && !m.Departing && m.Name != "" && m.Name != m.Host && inventoryHost[m.Name] {
			return &RefusalError{Member: id,
				Observed: fmt.Sprintf("its name is inventory host %s's, but its peer URL %s is the address of inventory host %s", m.Name, m.PeerURL, m.Host),
				Action: fmt.Sprintf("kprov stops and wipes a member only on the host its peer URL names, and cannot tell whether this one runs on %s or on %s: "+
					"check both (`etcdctl member list -w table`, and /etc/etcd/etcd.yaml on each); remove a stale member with %s, "+
					"or correct the inventory's addresses, then run kprov again", m.Name, m.Host, removeHint(m))}
		}
		if t, wanted := p.want[m.PeerURL]; wanted && m.Host != t.Name {
			return &RefusalError{Member: id,
				Observed: fmt.Sprintf("its peer URL %s is inventory host %s's, but the facts tie it to %s", m.PeerURL, t.Name, hostOrNone(m.Host)),
				Action: "a member whose peer URLs name more than one inventory host is tied to none: give it only its host's peer URL " +
					"(`etcdctl member update`), or remove it, then run kprov again"}
		}
		if o := onHost[m.Host]; m.Host != "" && o != nil {
			return &RefusalError{Member: id,
				Observed: fmt.Sprintf("it and member %s (ID %x) are both tied to host %s (peer URLs %s and %s)", o.Name, o.ID, m.Host, m.PeerURL, o.PeerURL),
				Action:   "find the stale one with `etcdctl member list -w table` and remove it with `etcdctl member remove`, then run kprov again"}
		}
		onHost[m.Host] = m
	}
	for _, m := range p.st.members {
		if _, wanted := p.want[m.PeerURL]; wanted || !m.Healthy || m.Learner || !p.namesake(m) {
			continue
		}
		var seen []string
		for _, o := range p.st.members {
			if o.Name == m.Name {
				seen = append(seen, fmt.Sprintf("ID %x at %s (%s)", o.ID, o.PeerURL, hostOrNone(o.Host)))
			}
		}
		for _, t := range p.in.Want {
			if t.Name == m.Name && !slices.ContainsFunc(p.st.members, func(o *planMember) bool { return o.PeerURL == t.PeerURL }) {
				seen = append(seen, fmt.Sprintf("the inventory's %s at %s, to be added", t.Name, t.PeerURL))
			}
		}
		return &RefusalError{Member: m.Name,
			Observed: fmt.Sprintf("the name belongs to more than one member: %s; the one at %s is healthy and not in the inventory", strings.Join(seen, ", "), m.PeerURL),
			Action: fmt.Sprintf("an initial-cluster cannot list one name twice, and kprov does not remove a healthy member on a guess: "+
				"if the member at %s is stale, remove it with %s, then run kprov again", m.PeerURL, removeHint(m))}
	}
	return nil
}

// removeHint is the command that removes the member; a member list rebuilt
// from config files has no IDs (docs/facts.md).
func removeHint(m *planMember) string {
	if m.ID == 0 {
		return "`etcdctl member remove ID` (its ID from `etcdctl member list`)"
	}
	return fmt.Sprintf("`etcdctl member remove %x`", m.ID)
}

func hostOrNone(h string) string {
	if h == "" {
		return "no inventory host"
	}
	return "host " + h
}

type etcdPlanner struct {
	certsRolled map[string]bool // hosts whose Certs a restart stage uploads
	in          EtcdInput
	st          *planState
	want        map[string]EtcdTarget
	stages      []plan.Stage
	notes       []string
}

func (p *etcdPlanner) finalConfig(t EtcdTarget) File {
	return p.in.Config(t, p.in.Want, StateExisting)
}

func (p *etcdPlanner) upload(host string, f File, reason string) plan.Step {
	sum := sha256.Sum256(f.Content)
	return plan.Step{Op: plan.OpUploadFile, Host: host, Path: f.Path, Mode: f.Mode, Content: f.Content,
		SHA256: hex.EncodeToString(sum[:]), Secret: f.Secret, Reason: reason}
}

func (p *etcdPlanner) waitHealthy(host string, voters []string, reason string, starting ...string) plan.Step {
	return plan.Step{Op: plan.OpWaitEtcdHealthy, Host: host, Voters: slices.Clone(voters), Starting: starting, Reason: reason}
}

// addStage opens the serial stage that adds one member.
func (p *etcdPlanner) addStage(name string, voting int) plan.Stage {
	return plan.Stage{Kind: plan.StageEtcdAdd, Target: name, Title: "adding member " + p.nth(name), Parallel: 1, Quorum: quorumNote(voting)}
}

// nth names a wanted member with its place among them, e.g. "2/3 (etcd-2)".
func (p *etcdPlanner) nth(name string) string {
	i := slices.IndexFunc(p.in.Want, func(t EtcdTarget) bool { return t.Name == name })
	return fmt.Sprintf("%d/%d (%s)", i+1, len(p.in.Want), name)
}

func targetsOf(ms []*planMember) []EtcdTarget {
	out := make([]EtcdTarget, len(ms))
	for i, m := range ms {
		out[i] = EtcdTarget{Name: m.Name, PeerURL: m.PeerURL}
	}
	return out
}

// bootstrap starts the first wanted member alone as a new cluster.
func (p *etcdPlanner) bootstrap() {
	first := p.in.Want[0]
	cfg := p.in.Config(first, []EtcdTarget{first}, StateNew)
	p.stages = append(p.stages, plan.Stage{
		Kind: plan.StageEtcdBootstrap, Target: first.Name, Title: "starting member " + p.nth(first.Name) + " as a new cluster", Parallel: 1, Quorum: quorumNote(1),
		Steps: []plan.Step{
			p.upload(first.Name, cfg, "the first member starts alone as a new cluster; the others join it as learners one at a time"),
			{Op: plan.OpStartService, Host: first.Name, Service: p.in.Service, Reason: "start the first member"},
			p.waitHealthy(first.Name, []string{first.Name}, "the new cluster must have elected its leader before anything joins it", first.Name),
		},
	})
	p.st.members = append(p.st.members, &planMember{EtcdMember: plan.EtcdMember{Name: first.Name, PeerURL: first.PeerURL, Host: first.Name,
		Healthy: true, Running: true, HostReachable: true, Leader: true}, added: true})
}

// recover brings the live cluster to a state where membership can change:
// stopped members started together, a learner left by an interrupted run
// finished or removed, and the quorum precondition checked.
func (p *etcdPlanner) recover() error {
	var stopped []*planMember
	for _, m := range p.st.members {
		// A learner is started by its own add procedure, after its configuration is written.
		if _, wanted := p.want[m.PeerURL]; !m.Running && m.HostReachable && wanted && !m.Learner {
			stopped = append(stopped, m)
		}
	}
	if len(stopped) > 0 {
		stage := plan.Stage{Kind: plan.StageEtcdStartStopped, Title: "starting stopped etcd members", Parallel: len(stopped)}
		allStopped := true
		for _, m := range p.st.voters() {
			if m.Running {
				allStopped = false
			}
		}
		reason := "start the stopped member so it rejoins the cluster"
		if allStopped {
			// A cold start: no member can win an election alone, so members
			// started one at a time would each wait for a quorum that never forms.
			reason = "cold start: every member is stopped, so they start together to form a quorum"
		}
		for _, m := range stopped {
			stage.Steps = append(stage.Steps, plan.Step{Op: plan.OpStartService, Host: m.Host, Service: p.in.Service, Reason: reason})
			m.Running = true
			m.Healthy = true
			m.started = true
		}
		var expect []*planMember
		for _, m := range p.st.voters() {
			if m.Healthy {
				expect = append(expect, m)
			}
		}
		stage.Steps = append(stage.Steps, p.waitHealthy(stopped[0].Host, hostsOf(expect), "the started members must rejoin before any membership change", hostsOf(stopped)...))
		p.stages = append(p.stages, stage)
	}

	var learners []*planMember
	for _, m := range p.st.members {
		if m.Learner {
			learners = append(learners, m)
		}
	}
	if len(learners) > 1 {
		return &RefusalError{Member: strings.Join(names(learners), ", "), Observed: "more than one learner in the cluster",
			Action: "etcd allows one learner at a time; remove the extra learners with etcdctl member remove"}
	}

	voters := p.st.voters()
	healthy := p.st.healthyVoters()
	if healthy < inventory.Quorum(len(voters)) {
		return &RefusalError{Member: strings.Join(unhealthyNames(voters), ", "),
			Observed: fmt.Sprintf("only %d of %d voting members are healthy, below the quorum of %d", healthy, len(voters), inventory.Quorum(len(voters))),
			Action:   "the cluster cannot commit a membership change without quorum: bring the members back (check their hosts and `journalctl -u etcd`), or restore from a snapshot"}
	}
	for _, m := range voters {
		if _, wanted := p.want[m.PeerURL]; wanted && !m.Healthy {
			observed := "is unhealthy"
			if !m.HostReachable {
				observed = "is unhealthy and its host is unreachable"
			}
			return &RefusalError{Member: m.Name, Observed: observed + " but stays in the inventory",
				Action: "bring it back (check the host and `journalctl -u etcd`), or replace it: remove the host from the inventory (kprov then removes the dead member before adding its replacement)"}
		}
	}

	// A dead member sharing its name with another member cannot stay in an
	// initial-cluster that a joining member is started with (etcd would read
	// one member with two peer URLs), so it goes before anything joins.
	for _, m := range slices.Clone(voters) {
		if _, wanted := p.want[m.PeerURL]; !wanted && !m.Healthy && p.namesake(m) {
			if err := p.remove(m, "the member is unhealthy, not in the inventory, and shares its name with another; it goes before anything joins"); err != nil {
				return err
			}
		}
	}

	if len(learners) == 1 {
		l := learners[0]
		if t, wanted := p.want[l.PeerURL]; wanted {
			p.promote(l, t, "a learner left by an interrupted run is finished before anything else changes")
		} else if err := p.remove(l, "a learner left by an interrupted run is not in the inventory"); err != nil {
			return err
		}
	}
	return nil
}

// namesake reports whether another live member, or a member the inventory
// wants, has m's name.
func (p *etcdPlanner) namesake(m *planMember) bool {
	if m.Name == "" {
		return false
	}
	for _, o := range p.st.members {
		if o != m && o.Name == m.Name {
			return true
		}
	}
	return slices.ContainsFunc(p.in.Want, func(t EtcdTarget) bool { return t.Name == m.Name && t.PeerURL != m.PeerURL })
}

func unhealthyNames(ms []*planMember) []string {
	var out []string
	for _, m := range ms {
		if !m.Healthy {
			out = append(out, m.Name)
		}
	}
	return out
}

// changeMembership removes dead members, then adds and removes one member at
// a time, keeping the voting count at or above the target while replacing.
func (p *etcdPlanner) changeMembership() error {
	liveURLs := map[string]bool{}
	var dead, leaving []*planMember
	for _, m := range p.st.members {
		liveURLs[m.PeerURL] = true
		if _, wanted := p.want[m.PeerURL]; wanted {
			continue
		}
		if m.Healthy {
			leaving = append(leaving, m)
		} else {
			dead = append(dead, m)
		}
	}
	var adds []EtcdTarget
	for _, t := range p.in.Want {
		if !liveURLs[t.PeerURL] {
			adds = append(adds, t)
		}
	}
	// The leader leaves last, so leadership moves at most once.
	slices.SortStableFunc(leaving, func(a, b *planMember) int { return boolCmp(a.Leader, b.Leader) })

	if len(p.st.voters()) == 1 && len(leaving) == 1 && len(p.in.Want) == 1 {
		return &RefusalError{Member: leaving[0].Name, Observed: "it is the only member and the inventory replaces it with another single member",
			Action: "going 1→2→1 loses quorum if either member fails midway; grow to three members first, then remove the old one in a later run"}
	}

	// A dead member still counts toward the quorum size, so it goes first:
	// removing it lowers the quorum before anything is added.
	for _, m := range dead {
		if err := p.remove(m, "the member is unhealthy and no longer in the inventory; it is removed before its replacement is added"); err != nil {
			return err
		}
	}
	for len(adds) > 0 || len(leaving) > 0 {
		if len(adds) > 0 {
			t := adds[0]
			adds = adds[1:]
			p.addLearner(t)
		}
		for len(leaving) > 0 && (len(adds) == 0 || len(p.st.voters()) > len(p.in.Want)) {
			m := leaving[0]
			leaving = leaving[1:]
			if err := p.remove(m, "the member is no longer in the inventory"); err != nil {
				return err
			}
		}
	}
	return nil
}

func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	default:
		return -1
	}
}

// addLearner adds one member as a learner, starts it and promotes it. A
// learner does not count toward quorum, so a member that fails to start
// never costs the cluster its quorum.
func (p *etcdPlanner) addLearner(t EtcdTarget) {
	m := &planMember{EtcdMember: plan.EtcdMember{Name: t.Name, PeerURL: t.PeerURL, Host: t.Name, Learner: true, HostReachable: true}, added: true}
	voters := p.st.voters()
	stage := p.addStage(t.Name, len(voters))
	stage.Steps = append(stage.Steps,
		p.waitHealthy(t.Name, hostsOf(voters), "every voting member must be healthy before a membership change"),
		plan.Step{Op: plan.OpEtcdAddLearner, Host: t.Name, Member: t.Name, PeerURL: t.PeerURL,
			Reason: "join as a learner: it receives the log but does not vote until promoted"},
	)
	p.stages = append(p.stages, stage)
	p.st.members = append(p.st.members, m)
	p.promote(m, t, "")
}

// promote writes a learner's configuration, starts it, waits for it to catch
// up and promotes it, appending to the current stage when one is open for it.
func (p *etcdPlanner) promote(m *planMember, t EtcdTarget, why string) {
	voters := p.st.voters()
	initial := append(targetsOf(voters), t)
	if last := len(p.stages) - 1; last < 0 || p.stages[last].Kind != plan.StageEtcdAdd || p.stages[last].Target != t.Name {
		p.stages = append(p.stages, p.addStage(t.Name, len(voters)))
	}
	stage := &p.stages[len(p.stages)-1]
	startReason := "start the learner against the existing cluster"
	if why != "" {
		startReason = why
	}
	stage.Steps = append(stage.Steps,
		p.upload(t.Name, p.in.Config(t, initial, StateExisting), "initial-cluster-state existing with the current members and itself: it joins, never forms a cluster of its own"),
		plan.Step{Op: plan.OpStartService, Host: t.Name, Service: p.in.Service, Reason: startReason},
		plan.Step{Op: plan.OpWaitCaughtUp, Host: t.Name, Member: t.Name, Reason: "promotion is refused until the learner holds most of the leader's log"},
		plan.Step{Op: plan.OpEtcdPromote, Host: t.Name, Member: t.Name, MemberID: m.ID, Reason: "make the caught-up learner a voting member"},
	)
	m.Learner, m.Running, m.Healthy, m.added = false, true, true, true
	stage.Steps = append(stage.Steps, p.waitHealthy(t.Name, hostsOf(p.st.voters()), "every voting member, the new one included, must be healthy before the next change", t.Name))
}

// remove takes one member out: leadership moved away, member removed, and only
// then its service stopped and its data wiped, so a removal that fails leaves
// a working member behind.
//
// The steps that talk to etcd (the health wait, the leadership move, the
// removal) go through a healthy member that stays (via): the departing
// member's own host may be down, or outside the inventory. The removal is
// by the member's ID and exact peer URL. The steps on the departing
// member's machine (stop, wipe) go to the host its peer URL names, never to
// the host its name suggests (a stale member may carry a healthy member's
// name, RELIABILITY 19), and only when that machine was reached: an
// inventory host, or the machine of a healthy member outside the inventory
// (plan.EtcdMember.Departing). Otherwise nothing is stopped or wiped, and
// the plan says what is left behind.
func (p *etcdPlanner) remove(m *planMember, reason string) error {
	voters := p.st.voters()
	var expect []*planMember
	for _, v := range voters {
		if v.Healthy && v != m {
			expect = append(expect, v)
		}
	}
	via := p.via(expect)
	if via == "" {
		return &RefusalError{Member: m.Name, Observed: fmt.Sprintf("no healthy member on an inventory host is left to remove it through (peer URL %s)", m.PeerURL),
			Action: "remove it with " + removeHint(m)}
	}
	title := "removing member " + m.Name
	switch {
	case m.Host == "" || m.Departing:
		title += " at " + m.PeerURL
	case m.Host != m.Name:
		title += " (host " + m.Host + ")"
	}
	onMachine := m.Host != "" && m.HostReachable
	if !onMachine {
		left := p.leftBehind(m)
		title += " (" + left + ")"
		p.notes = append(p.notes, fmt.Sprintf("etcd member %s (ID %x, %s) is removed through %s; %s", m.Name, m.ID, m.PeerURL, via, left))
	}
	reason += fmt.Sprintf("; removed by ID and peer URL through %s, a member that stays", via)
	stage := plan.Stage{Kind: plan.StageEtcdRemove, Target: m.Name, Title: title, Parallel: 1, Quorum: quorumNote(len(voters))}
	stage.Steps = append(stage.Steps, p.waitHealthy(via, hostsOf(expect), "every remaining member must be healthy before a member is removed"))
	if !m.Learner && m.Healthy {
		stage.Steps = append(stage.Steps, plan.Step{Op: plan.OpEtcdMoveLeader, Host: via, Member: m.Name, PeerURL: m.PeerURL,
			Reason: "if this member leads, leadership moves to a healthy member first so the cluster never waits out an election"})
	}
	stage.Steps = append(stage.Steps, plan.Step{Op: plan.OpEtcdRemove, Host: via, Member: m.Name, MemberID: m.ID, PeerURL: m.PeerURL, Reason: reason})
	if onMachine {
		// A serial stage stops at its first failed host, so these run
		// only once the removal above has taken effect.
		stage.Steps = append(stage.Steps,
			plan.Step{Op: plan.OpStopService, Host: m.Host, Service: p.in.Service, Reason: "stop the removed member, only now that it is out of the member list"},
			plan.Step{Op: plan.OpWipeDataDir, Host: m.Host, Path: p.in.DataDir, Reason: "a removed member's data must not let it rejoin with its old identity"},
		)
	}
	p.stages = append(p.stages, stage)
	p.st.members = slices.DeleteFunc(p.st.members, func(x *planMember) bool { return x == m })
	return nil
}

// leftBehind says what a removal leaves on the member's machine when kprov
// cannot reach it.
func (p *etcdPlanner) leftBehind(m *planMember) string {
	what := fmt.Sprintf("its data dir %s and its %s unit are left on it", p.in.DataDir, p.in.Service)
	switch {
	case m.Host == "" && !m.Healthy:
		return "on no inventory host and not answering, so no machine is provably its: nothing is stopped or wiped; " + what
	case m.Host == "":
		return "on no inventory host and its machine not reached: nothing is stopped or wiped; " + what
	default:
		return m.Host + " unreachable: " + what
	}
}

// via is the inventory host the etcd steps of a removal run on: apply
// reaches etcd through the inventory's etcd hosts, so it is the first
// healthy member that stays, else any healthy one on an inventory host,
// else the first wanted member.
func (p *etcdPlanner) via(stay []*planMember) string {
	for _, m := range stay {
		if _, wanted := p.want[m.PeerURL]; wanted && m.Host != "" && !m.Departing {
			return m.Host
		}
	}
	if hs := hostsOf(stay); len(hs) > 0 {
		return hs[0]
	}
	if len(p.in.Want) > 0 {
		return p.in.Want[0].Name
	}
	return ""
}

// rollConfig restarts, one at a time, the members whose configuration
// changed and those whose process does not run the etcd binary the plan
// leaves on their host (a rolling upgrade: the prepare stage has uploaded
// the new binary to every member before this stage). Each restart waits for
// every voter to be healthy first, moves leadership away if the member
// leads, and is followed by a wait for the member to catch up to the
// leader's applied index and for every voter to be healthy, so the next
// restart never takes a second member down while one is still missing
// (RELIABILITY 8, 21). The leader of the facts restarts last, so
// leadership moves at most once.
func (p *etcdPlanner) rollConfig() {
	type restart struct {
		m       *planMember
		config  bool   // the configuration file is rewritten
		certs   []File // renewed certificates uploaded before the restart
		upgrade *etcdUpgrade
	}
	var changed []restart
	for _, m := range p.st.members {
		t, wanted := p.want[m.PeerURL]
		if !wanted || m.added {
			continue
		}
		r := restart{m: m, upgrade: p.upgradeOf(m)}
		if !m.started && m.Running {
			r.certs = p.in.Certs[m.Host]
		}
		final := p.finalConfig(t).Content
		switch {
		case sha(final) == m.ConfigSHA256:
		case sha(p.normalize(final)) == m.ConfigCoreSHA256 && r.upgrade == nil && len(r.certs) == 0:
			// Only bootstrap settings differ: rewrite in finalize, no restart.
			m.added = true
		default:
			// A member restarting anyway takes its whole final configuration now.
			r.config = true
		}
		if r.config || r.upgrade != nil || len(r.certs) > 0 {
			changed = append(changed, r)
		}
	}
	slices.SortStableFunc(changed, func(a, b restart) int { return boolCmp(a.m.Leader, b.m.Leader) })
	for _, r := range changed {
		m := r.m
		t := p.want[m.PeerURL]
		voters := p.st.voters()
		title, why := "restarting member "+m.Name, "etcd reads its configuration at start"
		switch {
		case r.upgrade != nil:
			title, why = r.upgrade.title(m.Name), r.upgrade.reason
			if r.config {
				why += "; its configuration changed too"
			}
			if len(r.certs) > 0 {
				why += "; its certificates were renewed too"
			}
		case len(r.certs) > 0 && !r.config:
			title, why = "renewing the certificates of member "+m.Name, "etcd keeps the certificates it started with on its open peer and client connections: restart it so every connection uses the renewed ones"
		case len(r.certs) > 0:
			why += "; its certificates were renewed too"
		}
		steps := []plan.Step{
			p.waitHealthy(m.Host, hostsOf(voters), "a member restarts only while every other member is healthy"),
			{Op: plan.OpEtcdMoveLeader, Host: m.Host, Member: m.Name, Reason: "if this member leads, leadership moves away before it restarts"},
		}
		if r.config {
			steps = append(steps, p.upload(m.Host, p.finalConfig(t), "the member's configuration changed"))
		}
		for _, f := range r.certs {
			steps = append(steps, p.upload(m.Host, f, "renewed from kprov's etcd CA (checked against the CA and the member's names before planning): this member alone gets it while the others keep serving"))
		}
		if len(r.certs) > 0 {
			p.certsRolled[m.Host] = true
		}
		steps = append(steps,
			plan.Step{Op: plan.OpRestartService, Host: m.Host, Service: p.in.Service, Reason: why},
			plan.Step{Op: plan.OpWaitCaughtUp, Host: m.Host, Member: m.Name,
				Reason: "the restarted member must have applied what the leader had applied, so the next restart leaves a majority that holds every write"},
			p.waitHealthy(m.Host, hostsOf(voters), "the restarted member must be back and every voter healthy before the next one restarts", m.Host),
		)
		p.stages = append(p.stages, plan.Stage{
			Kind: plan.StageEtcdRestart, Target: m.Name, Title: title, Parallel: 1, Quorum: quorumNote(len(voters)), Steps: steps,
		})
		m.ConfigSHA256 = sha(p.finalConfig(t).Content)
		if r.upgrade != nil {
			m.Version = r.upgrade.to
		}
	}
}

// leftoverCerts uploads the renewed certificates of members no rolling
// restart took (a member this plan starts or adds, or one that is not
// running): such a member reads them when it starts. One member at a time,
// so renewed certificates never reach every member at once.
func (p *etcdPlanner) leftoverCerts() {
	for _, t := range p.in.Want {
		files := p.in.Certs[t.Name]
		if len(files) == 0 || p.certsRolled[t.Name] {
			continue
		}
		stage := plan.Stage{Kind: plan.StageEtcdRestart, Target: t.Name, Title: "writing the renewed certificates of member " + t.Name, Parallel: 1}
		for _, f := range files {
			stage.Steps = append(stage.Steps, p.upload(t.Name, f, "renewed from kprov's etcd CA; the member is not running, so it reads them when it starts"))
		}
		p.stages = append(p.stages, stage)
	}
}

// finalize rewrites the configuration of members this plan added to
// initial-cluster-state existing with the full member list. A member left with
// "new" and only itself would silently start a second one-member cluster the
// day its data directory is lost. No restart: etcd ignores these settings once
// its data directory exists.
func (p *etcdPlanner) finalize() {
	stage := plan.Stage{Kind: plan.StageEtcdFinalize, Title: "recording the full member list in every added member's configuration", Parallel: len(p.st.members)}
	for _, m := range p.st.members {
		if !m.added {
			continue
		}
		stage.Steps = append(stage.Steps, p.upload(m.Host, p.finalConfig(p.want[m.PeerURL]),
			"record the full member list with initial-cluster-state existing, for the day the data directory is lost"))
	}
	if len(stage.Steps) > 0 {
		p.stages = append(p.stages, stage)
	}
}

func (p *etcdPlanner) normalize(b []byte) []byte {
	if p.in.Normalize == nil {
		return b
	}
	return p.in.Normalize(b)
}

func sha(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
