package provision

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/backup"
	"github.com/kprov/kprov/provision/plan"
)

// EtcdSnapshot is a snapshot taken by Pipeline.EtcdSnapshot and checked.
type EtcdSnapshot struct {
	// Member and Endpoint are the member it was streamed from.
	Member   string
	Endpoint string
	// Version is the member's etcd version.
	Version string
	Status  backup.SnapshotStatus
	// Members is the member list when it was taken.
	Members []backup.Member
}

// snapshotCandidate is a member a snapshot may be taken from.
type snapshotCandidate struct {
	name, endpoint string
	leader         bool
}

// EtcdSnapshot streams an etcd snapshot from one healthy voting member into
// a new file at path (mode 0600) and checks it with etcd's own code
// (backup.CheckSnapshot). External and stacked members alike are reached
// through an SSH tunnel to their own host, with kprov's etcd client
// certificate from the state directory.
//
// Only a voter that answers for the cluster and follows a leader is asked:
// a learner or a member cut off from quorum may hold an old state. Followers
// are asked before the leader, whose disk and network the cluster's writes
// already wait on. A member whose snapshot fails or does not check out is
// skipped for the next; when none is left, the error names every member
// tried and why.
func (p *Pipeline) EtcdSnapshot(ctx context.Context, path string) (*EtcdSnapshot, error) {
	tlsCfg, err := EtcdClientTLS(p.Cluster.State)
	if err != nil {
		return nil, err
	}
	inv := p.Cluster.Inventory
	a := newApplier(p.Conn, ApplyOptions{Inventory: inv, EtcdTLS: tlsCfg, Logger: p.logger()})
	defer a.close()

	var tried []error
	list, err := a.etcd.memberList(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// Without a member list there is no quorum, so no member is
		// healthy; ask each one anyway so the error says why each failed.
		return nil, noHealthyMember(inv, fmt.Errorf("member list: %w", err), a.etcd.unreachableReasons(ctx))
	}
	res := &EtcdSnapshot{}
	var candidates []snapshotCandidate
	for _, m := range list.Members {
		name := memberName(m)
		res.Members = append(res.Members, backup.Member{ID: fmt.Sprintf("%x", m.ID), Name: m.Name, PeerURLs: slices.Clone(m.PeerURLs), Learner: m.IsLearner})
		if m.IsLearner {
			continue
		}
		st, err := a.etcd.memberStatus(ctx, m)
		switch {
		case err != nil:
			tried = append(tried, fmt.Errorf("%s: %w", name, err))
		case st.Header.GetClusterId() != list.Header.GetClusterId():
			tried = append(tried, fmt.Errorf("%s: answers for cluster %x, not %x", name, st.Header.GetClusterId(), list.Header.GetClusterId()))
		case st.Leader == 0:
			tried = append(tried, fmt.Errorf("%s: has no leader", name))
		default:
			candidates = append(candidates, snapshotCandidate{name: name, endpoint: m.ClientURLs[0], leader: st.Leader == m.ID})
		}
	}
	// Followers first, the leader last, each in member list order.
	slices.SortStableFunc(candidates, func(x, y snapshotCandidate) int { return cmp.Compare(b2i(x.leader), b2i(y.leader)) })
	for _, c := range candidates {
		version, err := a.etcd.snapshot(ctx, c.endpoint, path)
		if err == nil {
			var st backup.SnapshotStatus
			if st, err = backup.CheckSnapshot(path); err == nil {
				res.Member, res.Endpoint, res.Version, res.Status = c.name, c.endpoint, version, st
				a.log.Info("etcd snapshot taken", "member", c.name, "revision", st.Revision, "keys", st.TotalKeys, "size", st.TotalSize)
				return res, nil
			}
			os.Remove(path)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		a.log.Warn("etcd snapshot failed; trying the next member", "member", c.name, "err", err)
		tried = append(tried, fmt.Errorf("%s: %w", c.name, err))
	}
	return nil, noHealthyMember(inv, nil, tried)
}

// snapshot streams one member's snapshot into path through a client of its
// own, on that member's endpoint alone.
func (e *etcdOps) snapshot(ctx context.Context, endpoint, path string) (string, error) {
	cli, err := e.newClient(ctx, []string{endpoint})
	if err != nil {
		return "", err
	}
	defer cli.Close()
	return backup.SaveSnapshot(ctx, cli, path)
}

// unreachableReasons asks each of the inventory's etcd members for its
// status on its own client URL, all at once (a dead member costs one
// timeout, not one each), and returns why each one failed.
func (e *etcdOps) unreachableReasons(ctx context.Context) []error {
	hosts := e.etcdHosts()
	out := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		ep := plan.EtcdClientURL(h.Address)
		wg.Go(func() { out[i] = fmt.Errorf("%s (%s): %w", h.Name, ep, e.whyUnhealthy(ctx, h, ep)) })
	}
	wg.Wait()
	return out
}

// whyUnhealthy says why one member cannot give a snapshot. The host's SSH
// connection is tried first: the etcd client would report a host that is
// down only as a timeout, while the connection error says what happened.
func (e *etcdOps) whyUnhealthy(ctx context.Context, h *inventory.Host, ep string) error {
	if _, err := e.a.conn.Connect(ctx, h); err != nil {
		return err
	}
	cli, err := e.newClient(ctx, []string{ep})
	if err != nil {
		return err
	}
	defer cli.Close()
	sctx, cancel := context.WithTimeout(ctx, DefaultEtcdTimeout)
	defer cancel()
	st, err := cli.Status(sctx, ep)
	switch {
	case err != nil:
		return err
	case st.Leader == 0:
		return errors.New("has no leader")
	}
	return errors.New("answers, but the member list could not be read through it")
}

// noHealthyMember is the error when no snapshot could be taken.
func noHealthyMember(inv *inventory.Inventory, cause error, tried []error) error {
	what := "external etcd hosts"
	if inv.Topology.EtcdMode == inventory.EtcdStacked {
		what = "masters (stacked etcd)"
	}
	err := fmt.Errorf("no healthy etcd voting member gave a snapshot: start the etcd members on the %s (kprov status shows which are down), then run kprov backup again", what)
	return errors.Join(append([]error{err, cause}, tried...)...)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
