package provision

import (
	"context"
	"crypto/tls"
	"fmt"

	"github.com/kprov/kprov/inventory"
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
