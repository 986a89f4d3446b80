package provision

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/backup"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/provision/ssh"
	"github.com/kprov/kprov/roles"
)

// CheckRestoreBackup refuses a backup that cannot be restored onto this
// inventory, before any host is touched: one of another cluster, or of
// another etcd mode (a stacked cluster's data cannot become an external
// cluster's, or the other way round, without kubeadm's own migration).
func CheckRestoreBackup(inv *inventory.Inventory, m *backup.Manifest) error {
	if err := m.CheckCluster(inv.Cluster.Name); err != nil {
		return err
	}
	if m.EtcdMode != string(inv.Topology.EtcdMode) {
		return fmt.Errorf("the backup is of a cluster with %s etcd, and inventory %s describes %s etcd: restore onto an inventory with %s etcd",
			m.EtcdMode, inv.Path, inv.Topology.EtcdMode, m.EtcdMode)
	}
	return nil
}

// RestoreRequest is what the person running kprov restore chose.
type RestoreRequest struct {
	// Backup is opened and verified (backup.Open), and checked against the
	// inventory (CheckRestoreBackup); its state directory is installed.
	Backup *backup.Backup
	// AutoApprove skips View.Confirm, for the restore and the apply after it.
	AutoApprove bool
	// BreakLock and LockOwner as for Apply.
	BreakLock bool
	LockOwner string
}

// RestoreResult is what a restore saw and did.
type RestoreResult struct {
	// Token is the new etcd cluster's initial-cluster-token (roles.RestoreToken).
	Token string
	Facts *plan.Facts
	// Plan is the etcd half; nil when refused before planning.
	Plan *plan.Plan
	// Report is nil when the etcd half had nothing to do.
	Report *Report
	// Revision is the lowest revision the restored members serve: above
	// the snapshot's by the bump.
	Revision int64
	// Members are the restored cluster's members.
	Members []MemberStatus
	// Apply is the apply that brought Kubernetes back; nil when it did not run.
	Apply *ApplyResult
	// DeletedNodes are the Node objects of hosts not in the inventory that
	// this run deleted.
	DeletedNodes []string
	// EtcdTime and ApplyTime are how long each half took.
	EtcdTime, ApplyTime time.Duration
}

// Restore rebuilds the cluster from a backup onto the inventory's hosts,
// under the cluster lock: gather facts, refuse hosts that hold a live
// cluster, plan the etcd half (roles.PlanRestore), show it and confirm,
// carry it out, check that every member serves a revision above the
// snapshot's, then run apply's own sequence for Kubernetes (kubeadm init on
// the first master against the restored etcd with the backed-up CAs, the
// other masters and the nodes joining), and finally delete the Node objects
// of hosts the inventory no longer has. With stacked etcd the restored
// member is the first master's, started by its kubeadm init, so the
// revision is checked after the apply.
//
// Every part checks the live state first, so a restore interrupted anywhere
// and run again continues: members restored by this restore are recognised
// by their marker (roles.RestoredMember) and never restored twice.
func (p *Pipeline) Restore(ctx context.Context, req RestoreRequest) (res *RestoreResult, err error) {
	res = &RestoreResult{}
	inv := p.Cluster.Inventory
	if err := CheckRestoreBackup(inv, &req.Backup.Manifest); err != nil {
		return res, err
	}
	snap, ok := req.Backup.Manifest.Part(backup.SnapshotName)
	if !ok {
		return res, errors.New("the backup has no snapshot")
	}
	err = p.locked(ctx, ApplyRequest{BreakLock: req.BreakLock, LockOwner: req.LockOwner}, func(ctx context.Context) error {
		return p.restoreLocked(ctx, req, snap.SHA256, res)
	})
	return res, err
}

// restoreLocked is Restore once the cluster lock is held.
func (p *Pipeline) restoreLocked(ctx context.Context, req RestoreRequest, snapshotSHA256 string, res *RestoreResult) error {
	inv := p.Cluster.Inventory
	start := p.now()
	facts, err := p.Facts(ctx)
	if err != nil {
		return err
	}
	res.Facts = facts
	in := roles.RestoreInput{SnapshotPath: req.Backup.SnapshotPath(), SnapshotSHA256: snapshotSHA256, Revision: req.Backup.Manifest.Revision}
	pl, token, err := roles.PlanRestore(inv, facts, p.Cluster.State, roles.PlanOptions{Parallel: p.Parallel, Templates: p.Cluster.Templates}, in)
	res.Token = token
	if err != nil {
		return err
	}
	res.Plan = pl
	if err := p.Preflight(ctx, facts); err != nil {
		return err
	}
	if !pl.Empty() {
		rep, err := p.confirmAndApply(ctx, pl, facts, req.AutoApprove, "restore", nil)
		res.Report = rep
		if err != nil && rep != nil {
			return fmt.Errorf("%w; run kprov restore again to continue", err)
		} else if err != nil {
			return err
		}
	}
	// A stacked member runs only once kubeadm init started it, so its
	// revision is checked after the apply; external members run now.
	stacked := inv.Topology.EtcdMode == inventory.EtcdStacked
	if !stacked {
		if res.Members, res.Revision, err = p.restoredRevision(ctx, req.Backup.Manifest.Revision); err != nil {
			return err
		}
	}
	res.EtcdTime = p.now().Sub(start)

	start = p.now()
	res.Apply = &ApplyResult{}
	if err := p.applyLocked(ctx, ApplyRequest{AutoApprove: req.AutoApprove}, res.Apply); err != nil {
		if stacked {
			return fmt.Errorf("etcd's data is restored on %s; bringing Kubernetes back: %w; run kprov restore again to continue", inv.Topology.Masters[0], err)
		}
		return fmt.Errorf("etcd is restored (revision %d); bringing Kubernetes back: %w; run kprov restore again to continue", res.Revision, err)
	}
	res.ApplyTime = p.now().Sub(start)
	if stacked {
		if res.Members, res.Revision, err = p.restoredRevision(ctx, req.Backup.Manifest.Revision); err != nil {
			return err
		}
	}
	if res.DeletedNodes, err = p.deleteStaleNodes(ctx); err != nil {
		return err
	}
	return nil
}

// restoredRevision reads every member of the restored cluster and refuses
// a cluster that serves a revision not above the snapshot's: the bump
// (plan.EtcdRestoreRevisionBump) is what keeps Kubernetes watchers from
// seeing time run backwards, so a member without it is not a restored one.
func (p *Pipeline) restoredRevision(ctx context.Context, snapshot int64) ([]MemberStatus, int64, error) {
	tlsCfg, err := EtcdClientTLS(p.Cluster.State)
	if err != nil {
		return nil, 0, err
	}
	a := newApplier(p.Conn, ApplyOptions{Inventory: p.Cluster.Inventory, EtcdTLS: tlsCfg})
	defer a.close()
	list, err := a.etcd.memberList(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("restored etcd: list members: %w", err)
	}
	var out []MemberStatus
	var lowest int64
	var errs []error
	for _, m := range list.Members {
		ms := MemberStatus{ID: m.ID, Name: memberName(m), Learner: m.IsLearner}
		if len(m.PeerURLs) > 0 {
			ms.PeerURL = m.PeerURLs[0]
		}
		st, err := a.etcd.memberStatus(ctx, m)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("member %s: %w", ms.Name, err))
		case st.Header.GetRevision() <= snapshot:
			errs = append(errs, fmt.Errorf("member %s serves revision %d, not above the snapshot's %d: it was not restored with --bump-revision", ms.Name, st.Header.GetRevision(), snapshot))
		default:
			ms.Healthy, ms.Leader, ms.RaftIndex, ms.DBSize, ms.Version = st.Leader != 0, st.Leader == m.ID, st.RaftIndex, st.DbSize, st.Version
			if lowest == 0 || st.Header.GetRevision() < lowest {
				lowest = st.Header.GetRevision()
			}
		}
		out = append(out, ms)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if len(errs) > 0 {
		return out, lowest, fmt.Errorf("restored etcd: %w", errors.Join(errs...))
	}
	return out, lowest, nil
}

// deleteStaleNodes deletes, through kubectl on the first master, the Node
// objects the restored etcd still holds for hosts the inventory does not
// have: their machines are gone, and their pods would otherwise wait on
// them until the node lifecycle controller evicts them.
func (p *Pipeline) deleteStaleNodes(ctx context.Context) ([]string, error) {
	inv := p.Cluster.Inventory
	master := inv.Topology.Masters[0]
	ex, err := p.Conn.Connect(ctx, inv.Host(master))
	if err != nil {
		return nil, fmt.Errorf("delete the old nodes: %w", err)
	}
	nodes, err := GatherNodes(ctx, ex)
	if err != nil {
		return nil, fmt.Errorf("delete the old nodes: %w", err)
	}
	stale := roles.StaleNodes(inv, nodes)
	for _, n := range stale {
		if _, err := runCapped(ctx, ex, ssh.Command{Cmd: scriptDeleteNode(n), Timeout: DefaultCommandTimeout}); err != nil {
			return nil, fmt.Errorf("%s: delete node %s: %w", master, n, err)
		}
	}
	return stale, nil
}
