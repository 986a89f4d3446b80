package provision

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
)

// MemberStatus is one etcd member as kprov status shows it: from the member
// list, and from the member's own answer on its client URL.
type MemberStatus struct {
	ID        uint64 `json:"id"`
	Name      string `json:"name"`
	PeerURL   string `json:"peer_url"`
	Learner   bool   `json:"learner"`
	Healthy   bool   `json:"healthy"`
	Leader    bool   `json:"leader"`
	RaftIndex uint64 `json:"raft_index"`
	DBSize    int64  `json:"db_size"`
	Version   string `json:"version,omitempty"`
	Error     string `json:"error,omitempty"`
	// Departing: no inventory host has its peer URL's address, so the
	// next apply removes it (a scale-in or a replacement under way).
	Departing bool `json:"departing,omitempty"`
}

// EtcdStatus reads the etcd cluster's members (external, or stacked on the masters) and each member's
// status through SSH tunnels, read-only. A member that does not answer is
// listed unhealthy with the reason.
func EtcdStatus(ctx context.Context, inv *inventory.Inventory, conn Connector, tlsCfg *tls.Config) ([]MemberStatus, error) {
	a := newApplier(conn, ApplyOptions{Inventory: inv, EtcdTLS: tlsCfg})
	defer a.close()
	list, err := a.etcd.memberList(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]MemberStatus, 0, len(list.Members))
	for _, m := range list.Members {
		ms := MemberStatus{ID: m.ID, Name: memberName(m), Learner: m.IsLearner}
		if len(m.PeerURLs) > 0 {
			ms.PeerURL = m.PeerURLs[0]
			ms.Departing = !slices.ContainsFunc(inv.Hosts, func(h *inventory.Host) bool { return plan.EtcdPeerURL(h.Address) == ms.PeerURL })
		}
		st, err := a.etcd.memberStatus(ctx, m)
		if err != nil {
			ms.Error = err.Error()
		} else if st.Header.GetClusterId() != list.Header.GetClusterId() {
			ms.Error = fmt.Sprintf("answers for cluster %x", st.Header.GetClusterId())
		} else {
			ms.Healthy = st.Leader != 0
			ms.Leader = st.Leader == m.ID
			ms.RaftIndex, ms.DBSize, ms.Version = st.RaftIndex, st.DbSize, st.Version
		}
		out = append(out, ms)
	}
	return out, nil
}

// StatusReport is what kprov status shows: every host with its node, and
// every etcd member with the quorum (stacked members once a control plane runs).
type StatusReport struct {
	Hosts []HostStatus   `json:"hosts"`
	Etcd  []MemberStatus `json:"etcd,omitempty"`
	// Quorum is the etcd figure, e.g. "3 voting, quorum 2, 3 healthy".
	Quorum    string `json:"quorum,omitempty"`
	EtcdError string `json:"etcd_error,omitempty"`
	// Healthy is true when every host answers, every joined node is Ready,
	// and the etcd member list was read with every voting member healthy.
	Healthy bool `json:"healthy"`
	// Problems says what keeps Healthy false, one entry per host or member.
	Problems []string `json:"problems,omitempty"`
}

// problems lists what keeps the cluster from being healthy: hosts that do
// not answer, joined nodes the API does not report Ready, an etcd member
// list that could not be read, voting members that are not healthy. A
// learner is not counted: it has no vote, and the apply that added it
// promotes it or says why not.
func (r *StatusReport) problems(etcdChecked bool) []string {
	var out []string
	for _, h := range r.Hosts {
		switch {
		case !h.Reachable:
			out = append(out, h.Name+" is unreachable")
		case h.Joined && h.Node == NodeNotRegistered:
			out = append(out, "node "+h.Name+" is joined but not registered with the API server")
		case h.Joined && h.Node == NodeNotReady:
			out = append(out, "node "+h.Name+" is not Ready")
		}
	}
	switch {
	case !etcdChecked:
	case r.EtcdError != "":
		out = append(out, "the etcd member list could not be read")
	case len(r.Etcd) == 0:
		out = append(out, "etcd lists no members")
	}
	for _, m := range r.Etcd {
		if !m.Learner && !m.Healthy {
			out = append(out, "etcd member "+m.Name+" is not healthy")
		}
	}
	return out
}

// HostStatus is one host as kprov status shows it.
type HostStatus struct {
	Name         string            `json:"name"`
	Reachable    bool              `json:"reachable"`
	Error        string            `json:"error,omitempty"`
	Roles        string            `json:"roles"`
	Versions     map[string]string `json:"versions,omitempty"`
	ControlPlane bool              `json:"control_plane"`
	Joined       bool              `json:"joined"`
	// Node is the host's Node as the API server reports it: NodeReady,
	// NodeNotReady, NodeNotRegistered, or empty when no API server answered.
	Node string `json:"node,omitempty"`
}

// What HostStatus.Node says.
const (
	NodeReady         = "Ready"
	NodeNotReady      = "NotReady"
	NodeNotRegistered = "not registered"
)

// Status reads every host's facts, the nodes and the etcd members, read-only.
// A member or host that does not answer is shown with why and listed in
// Problems; only a failure to gather facts at all is an error.
func (p *Pipeline) Status(ctx context.Context) (*StatusReport, error) {
	c := p.Cluster
	facts, err := p.hostFacts(ctx)
	if err != nil {
		return nil, err
	}
	rep := &StatusReport{}
	controlPlane := false
	for _, h := range c.Inventory.Hosts {
		hs := HostStatus{Name: h.Name, Roles: plan.RoleList(h)}
		if hf := facts.Hosts[h.Name]; hf != nil {
			hs.Reachable, hs.Error, hs.Versions = hf.Reachable, hf.Error, hf.Versions
			hs.ControlPlane, hs.Joined = hf.ControlPlane, hf.Joined
		}
		if facts.Nodes != nil && h.IsNode() {
			switch nf := facts.Nodes[h.Name]; {
			case nf == nil:
				hs.Node = NodeNotRegistered
			case nf.Ready:
				hs.Node = NodeReady
			default:
				hs.Node = NodeNotReady
			}
		}
		controlPlane = controlPlane || hs.ControlPlane
		rep.Hosts = append(rep.Hosts, hs)
	}
	// External etcd always; stacked etcd once kubeadm has started its members.
	checkEtcd := c.Inventory.Topology.EtcdMode == inventory.EtcdExternal || controlPlane
	if checkEtcd {
		if err := p.etcdStatus(ctx, rep); err != nil {
			return nil, err
		}
	}
	rep.Problems = rep.problems(checkEtcd)
	rep.Healthy = len(rep.Problems) == 0
	return rep, nil
}

// etcdStatus fills in the external etcd members and the quorum.
func (p *Pipeline) etcdStatus(ctx context.Context, rep *StatusReport) error {
	tlsCfg, err := EtcdClientTLS(p.Cluster.State)
	if err != nil {
		return err
	}
	if rep.Etcd, err = EtcdStatus(ctx, p.Cluster.Inventory, p.Conn, tlsCfg); err != nil {
		rep.EtcdError = err.Error()
	}
	voting, healthy := 0, 0
	for _, m := range rep.Etcd {
		if !m.Learner {
			voting++
			if m.Healthy {
				healthy++
			}
		}
	}
	if len(rep.Etcd) > 0 {
		rep.Quorum = fmt.Sprintf("%d voting, quorum %d, %d healthy", voting, inventory.Quorum(voting), healthy)
	}
	return nil
}
