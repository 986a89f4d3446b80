package provision

import (
	"context"
	"crypto/tls"
	"fmt"

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
}

// EtcdStatus reads the external etcd cluster's members and each member's
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

// StatusReport is what kprov status shows: every host, and for an external
// etcd cluster every member with the quorum.
type StatusReport struct {
	Hosts []HostStatus   `json:"hosts"`
	Etcd  []MemberStatus `json:"etcd,omitempty"`
	// Quorum is the etcd figure, e.g. "3 voting, quorum 2, 3 healthy".
	Quorum    string `json:"quorum,omitempty"`
	EtcdError string `json:"etcd_error,omitempty"`
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
}

// Status reads every host's facts and the external etcd members, read-only.
// A member or host that does not answer is shown with why; only a failure to
// gather facts at all is an error.
func (p *Pipeline) Status(ctx context.Context) (*StatusReport, error) {
	c := p.Cluster
	facts, err := p.Facts(ctx)
	if err != nil {
		return nil, err
	}
	rep := &StatusReport{}
	for _, h := range c.Inventory.Hosts {
		hs := HostStatus{Name: h.Name, Roles: plan.RoleList(h)}
		if hf := facts.Hosts[h.Name]; hf != nil {
			hs.Reachable, hs.Error, hs.Versions = hf.Reachable, hf.Error, hf.Versions
			hs.ControlPlane, hs.Joined = hf.ControlPlane, hf.Joined
		}
		rep.Hosts = append(rep.Hosts, hs)
	}
	if c.Inventory.Topology.EtcdMode != inventory.EtcdExternal {
		return rep, nil
	}
	tlsCfg, err := EtcdClientTLS(c.State)
	if err != nil {
		return nil, err
	}
	if rep.Etcd, err = EtcdStatus(ctx, c.Inventory, p.Conn, tlsCfg); err != nil {
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
	return rep, nil
}
