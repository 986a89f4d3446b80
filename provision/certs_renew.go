package provision

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/roles"
)

// RenewRequest is what kprov certs renew asks for.
type RenewRequest struct {
	ApplyRequest
	// All renews every etcd certificate kprov issued; otherwise only those
	// expiring within ExpiringWithin.
	All            bool
	ExpiringWithin time.Duration
	// ControlPlane renews kubeadm's certificates on the masters too (every
	// master with --all, else those with one expiring within
	// ExpiringWithin), one master at a time (roles.RenewControlPlaneStages).
	ControlPlane bool
}

// RenewResult is what a renewal saw and did.
type RenewResult struct {
	ApplyResult
	// Renewed are the certificates reissued (empty: nothing to renew).
	Renewed []pki.Leaf
	// Changes are the state directory's files replaced, each with where the old one is kept.
	Changes []pki.Change
	// Masters are the masters whose kubeadm certificates are renewed.
	Masters []string
}

// ErrNotConverged is a renewal refused because the hosts differ from the
// inventory: a renewal starts only from a cluster apply leaves with No
// changes, so its plan holds nothing but the renewal.
var ErrNotConverged = errors.New("the hosts differ from the inventory")

// RenewCerts renews etcd certificates from kprov's existing etcd CA and
// rolls them out, under the cluster lock: facts, preflight, and a plan
// that must be empty (else ErrNotConverged: run kprov apply first, which
// also finishes an interrupted renewal); then the certificates to renew
// are chosen (every one, or those expiring within ExpiringWithin), reissued
// in memory and checked (pki.State.ReissueEtcdLeaves), and the plan made
// with them is shown and confirmed. Only then are they written to the
// state directory (the old ones kept under pki-history/) and the plan
// carried out: client certificates in the prepare stage, each running
// member's own in its rolling restart, one member at a time, the leader
// last (roles.PlanEtcd). Nothing to renew is an empty plan (No changes).
//
// p.Cluster must come from LoadClusterReadOnly: LoadCluster's pki.Ensure
// would reissue a certificate that expires within 30 days on its own.
func (p *Pipeline) RenewCerts(ctx context.Context, req RenewRequest) (*RenewResult, error) {
	res := &RenewResult{}
	err := p.locked(ctx, req.ApplyRequest, func(ctx context.Context) error { return p.renewLocked(ctx, req, res) })
	return res, err
}

func (p *Pipeline) renewLocked(ctx context.Context, req RenewRequest, res *RenewResult) error {
	c := p.Cluster
	facts, err := p.Facts(ctx)
	if err != nil {
		return err
	}
	res.Facts = facts
	if err := p.Preflight(ctx, facts); err != nil {
		return err
	}
	before, err := p.Plan(facts)
	if err != nil {
		return err
	}
	res.Plan = before
	if !before.Empty() {
		var stages []string
		for _, st := range before.Stages {
			stages = append(stages, st.Name())
		}
		return fmt.Errorf("%w (kprov apply would run %s): run kprov apply first (it also finishes a renewal that was interrupted), then kprov certs renew; a renewal starts only from a cluster apply leaves with No changes", ErrNotConverged, strings.Join(stages, ", "))
	}
	now := p.now()
	wanted := map[string]bool{}
	for _, name := range c.Inventory.Topology.EtcdMembers {
		wanted[name] = true
	}
	var bases []string
	for _, l := range c.State.EtcdLeaves() {
		if l.Member != "" && !wanted[l.Member] {
			continue // a member no longer in the inventory
		}
		if req.All || l.Pair.Cert.NotAfter.Before(now.Add(req.ExpiringWithin)) {
			bases = append(bases, l.Base)
		}
	}
	var masters []string
	if req.ControlPlane {
		if masters, err = p.kubeadmCertsToRenew(ctx, facts, req, now); err != nil {
			return err
		}
	}
	if len(bases) == 0 && len(masters) == 0 {
		return nil
	}
	old := c.State
	var renewal *pki.Renewal
	if len(bases) > 0 {
		var renewed *pki.State
		renewed, renewal, err = old.ReissueEtcdLeaves(roles.PKIRequest(c.Inventory), bases, now)
		if err != nil {
			return fmt.Errorf("state directory %s: %w", c.Inventory.Cluster.StateDir, err)
		}
		res.Renewed = renewal.Leaves()
		c.State = renewed
	}
	pl, err := p.Plan(facts)
	if err != nil {
		c.State = old
		return err
	}
	// kubeadm's certificates are renewed after etcd's roll, master by master.
	if cp := roles.RenewControlPlaneStages(c.Inventory, masters); len(cp) > 0 {
		pl.Stages = append(pl.Stages, cp...)
		pl.Count()
		// Those stages restart kube-apiserver with its renewed etcd
		// client, on every master when all of them are renewed.
		if all, _ := p.kubeadmCertsToRenew(ctx, facts, RenewRequest{All: true}, now); len(all) == len(masters) {
			pl.Notes = slices.DeleteFunc(pl.Notes, func(n string) bool { return strings.HasPrefix(n, roles.APIServerEtcdClientNotePrefix) })
		}
	}
	res.Plan, res.Masters = pl, masters
	save := func() error {
		if renewal == nil {
			return nil
		}
		changes, err := renewal.Save(now)
		res.Changes = changes
		for _, ch := range changes {
			p.logger().Info("pki", "file", ch.Path, "change", ch.Reason)
		}
		if err != nil {
			return fmt.Errorf("state directory %s: %w (nothing was changed on any host; run kprov certs renew again)", c.Inventory.Cluster.StateDir, err)
		}
		return nil
	}
	if pl.Empty() {
		// Only certificates no host holds (kprov's own healthcheck client
		// with stacked etcd): nothing to roll out, nothing to confirm.
		return save()
	}
	rep, err := p.confirmAndApply(ctx, pl, facts, req.AutoApprove, "certs renew", save)
	res.Report = rep
	if res.Changes == nil {
		c.State = old // declined or failed before the state directory changed
		res.Renewed = slices.Clip(res.Renewed[:0])
	}
	return err
}

// kubeadmCertsToRenew are the masters whose control plane runs and whose
// kubeadm certificates are to be renewed: every one with req.All, else
// those holding a kubeadm certificate (kprov certs' listing) that expires
// within req.ExpiringWithin.
func (p *Pipeline) kubeadmCertsToRenew(ctx context.Context, facts *plan.Facts, req RenewRequest, now time.Time) ([]string, error) {
	var running []string
	for _, m := range p.Cluster.Inventory.Topology.Masters {
		if hf := facts.Hosts[m]; hf != nil && hf.Reachable && hf.ControlPlane {
			running = append(running, m)
		}
	}
	if req.All || len(running) == 0 {
		return running, nil
	}
	rep, err := p.Certs(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, hc := range rep.Hosts {
		if !slices.Contains(running, hc.Host) {
			continue
		}
		if slices.ContainsFunc(hc.Certs, func(c HostCert) bool {
			return c.Kprov == nil && c.Host != nil && c.Host.NotAfter.Before(now.Add(req.ExpiringWithin))
		}) {
			out = append(out, hc.Host)
		}
	}
	return out, nil
}
