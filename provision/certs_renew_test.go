package provision

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kprov/kprov/provision/pki"
)

// stateFiles reads every file of the state directory.
func stateFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func renewRequest(all bool, within time.Duration) RenewRequest {
	return RenewRequest{ApplyRequest: ApplyRequest{LockOwner: testOwner, LockHeartbeat: time.Hour}, All: all, ExpiringWithin: within}
}

// TestRenewCertsRefusesUnconverged: on hosts that differ from the
// inventory the renewal stops after the plan, under the lock, before
// anything is reissued: the state directory is as it was, nothing shown.
func TestRenewCertsRefusesUnconverged(t *testing.T) {
	c := singleCluster(t)
	before := stateFiles(t, c.Inventory.Cluster.StateDir)
	host := newFakeHost(t, "node-1", lockRun("acquired"), probeFor(t, c, freshHost("node-1")...), preflightFor(c), releaseRun())
	view := &recordingView{}
	res, err := newPipeline(c, host, view).RenewCerts(context.Background(), renewRequest(true, 0))
	if !errors.Is(err, ErrNotConverged) || !strings.Contains(err.Error(), "run kprov apply first") {
		t.Fatalf("err = %v; want ErrNotConverged saying to apply first", err)
	}
	if len(res.Renewed) != 0 || len(view.events) != 0 {
		t.Errorf("renewed %v, view %v; want nothing", res.Renewed, view.events)
	}
	if after := stateFiles(t, c.Inventory.Cluster.StateDir); len(after) != len(before) {
		t.Errorf("the state directory changed: %d files, was %d", len(after), len(before))
	}
}

// TestRenewCertsConverged: on a converged single-node cluster (stacked
// etcd: kubeadm issues the members' certificates, kprov only its own
// healthcheck client), nothing expires within 30 days, so nothing is
// renewed; --all renews the healthcheck client, which no host holds, so
// there is nothing to roll out or confirm, and the old pair is kept in the
// history.
func TestRenewCertsConverged(t *testing.T) {
	c := singleCluster(t)
	if err := os.WriteFile(c.KubeconfigPath(), []byte("apiVersion: v1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := c.Inventory.Cluster.StateDir
	before := stateFiles(t, dir)
	converged := func() *fakeHost {
		return newFakeHost(t, "node-1", lockRun("acquired"), probeFor(t, c, convergedNode(t, c)...), nodeList(t, c), preflightFor(c), releaseRun())
	}
	view := &recordingView{confirm: errors.New("Confirm must not be called")}
	res, err := newPipeline(c, converged(), view).RenewCerts(context.Background(), renewRequest(false, 30*24*time.Hour))
	if err != nil || len(res.Renewed) != 0 || !res.Plan.Empty() {
		t.Fatalf("nothing expiring: renewed %v, %v", res.Renewed, err)
	}
	if after := stateFiles(t, dir); len(after) != len(before) {
		t.Error("the state directory changed with nothing to renew")
	}

	old := c.State.EtcdHealthcheckClient
	res, err = newPipeline(c, converged(), view).RenewCerts(context.Background(), renewRequest(true, 0))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Renewed) != 1 || res.Renewed[0].Base != "pki/etcd/healthcheck-client" || len(res.Changes) != 1 {
		t.Fatalf("renewed %v, changes %v", res.Renewed, res.Changes)
	}
	if len(view.events) != 0 {
		t.Errorf("view events %v; want none", view.events)
	}
	st, err := pki.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.EtcdHealthcheckClient.Cert.SerialNumber.Cmp(old.Cert.SerialNumber) == 0 || c.State.EtcdHealthcheckClient.Cert.SerialNumber.Cmp(st.EtcdHealthcheckClient.Cert.SerialNumber) != 0 {
		t.Error("the state directory (or the cluster's State) does not hold the renewed healthcheck client")
	}
	kept, _ := filepath.Glob(filepath.Join(dir, pki.HistoryDir, "*", "pki", "etcd", "healthcheck-client.crt"))
	if len(kept) != 1 || stateFiles(t, dir)[kept[0]] != string(old.CertPEM) {
		t.Errorf("history %v does not hold the old certificate", kept)
	}
}
