package provision

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/roles"
)

// recordingView is a View that records what the pipeline told it, and
// answers Confirm as it was told to.
type recordingView struct {
	mu      sync.Mutex // Step is called from each host's goroutine
	events  []string
	confirm error
}

func (v *recordingView) record(ev string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.events = append(v.events, ev)
}

func (v *recordingView) Plan(p *plan.Plan, changes []plan.HostChange) error {
	v.record("plan " + p.Summary.String())
	return nil
}

func (v *recordingView) Confirm(context.Context) error {
	v.record("confirm")
	return v.confirm
}

func (v *recordingView) Stage(ev StageEvent) { v.record("stage " + ev.Stage.Name()) }

func (v *recordingView) Step(ev StepEvent) {
	if ev.Done && ev.Changed {
		v.record("changed " + ev.Host + " " + ev.Step.String())
	}
}

func (v *recordingView) Warn(msg string, _ ...any) { v.record("warn " + msg) }

// singleCluster loads the single-node starter inventory with its state
// directory in a temporary directory.
func singleCluster(t *testing.T) *Cluster {
	t.Helper()
	return exampleCluster(t, "single", time.Now())
}

// exampleCluster loads a starter inventory with its state directory in a
// temporary directory, the PKI made at now.
func exampleCluster(t *testing.T, example string, now time.Time) *Cluster {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "examples", example+".kprov.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kprov.hcl")
	if err := os.WriteFile(path, src, 0o600); err != nil {
		t.Fatal(err)
	}
	inv, diags := inventory.Load(path, inventory.Options{})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	c, err := LoadCluster(inv, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// pipelineClock is the operator's clock the fake hosts agree with.
var pipelineClock = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// probeFor expects node-1's fact probe and answers with the given lines.
func probeFor(t *testing.T, c *Cluster, lines ...string) fakeRun {
	t.Helper()
	files, err := ManagedFiles(c)
	if err != nil {
		t.Fatal(err)
	}
	return probeRun(t, "node-1", files["node-1"], append(runtimeInstalled(), lines...)...)
}

// runtimeInstalled is the probe output of a standard host (cgroup v2,
// systemd, CAP_SYS_RESOURCE) with containerd 2, runc and the CNI plugins
// from its packages, ip and iptables for the pod routes: what the preflight's runtime rule wants when the
// artifacts block provides none.
func runtimeInstalled() []string {
	return []string{"version.containerd=containerd github.com/containerd/containerd/v2 v2.4.2 c3b3d8e4", "version.containerd-shim-runc-v2=",
		"version.runc=runc version 1.3.0", "version.ip=ip utility, iproute2-6.1.0", "version.iptables=iptables v1.8.9 (nf_tables)",
		"containerd_path=/usr/bin/containerd",
		"cgroup_fs=cgroup2fs", "systemd_init=yes", "root_fs=ext2/ext3", "cap_bnd=000001ffffffffff",
		"cni_plugin=bridge", "cni_plugin=host-local", "cni_plugin=loopback", "cni_plugin=portmap"}
}

// preflightFor expects node-1's preflight probe and answers a healthy host
// (clock in step, no port taken, every binary present).
func preflightFor(c *Cluster, extra ...string) fakeRun {
	bins := HostBinaries(c.Inventory)["node-1"]
	out := []string{"clock=" + strconv.FormatInt(pipelineClock.UnixNano(), 10), "ports=known"}
	for _, b := range bins {
		out = append(out, "bin."+b+"=yes")
	}
	out = append(out, extra...)
	return fakeRun{cmd: "sh -s", stdin: preflightScript(bins, ""), stdout: strings.Join(append(out, "end=ok"), "\n") + "\n"}
}

const testOwner = "test owner"

func lockRun(answer string) fakeRun {
	return fakeRun{cmd: scriptLockAcquire(plan.LockPath, testOwner), stdout: answer + "\n"}
}

func releaseRun() fakeRun { return fakeRun{cmd: scriptLockRelease(plan.LockPath, testOwner)} }

func newPipeline(c *Cluster, host *fakeHost, view *recordingView) *Pipeline {
	return &Pipeline{Cluster: c, Conn: &fakeConnector{hosts: map[string]*fakeHost{"node-1": host}}, Parallel: 2, View: view,
		Now: func() time.Time { return pipelineClock }}
}

// TestPipelineRefusesSavedPlanWhenFactsChanged: a plan saved against fresh
// hosts is refused once a host has changed, before anything is shown,
// confirmed or locked (the strict fake fails on any further command).
func TestPipelineRefusesSavedPlanWhenFactsChanged(t *testing.T) {
	c := singleCluster(t)
	fresh := plan.FreshFacts([]string{"node-1"})
	fresh.Offline = false
	fresh.Hosts["node-1"] = &plan.HostFacts{Reachable: true, Hostname: "node-1", OS: "debian 13", Arch: "x86_64",
		Files: map[string]string{}, Services: map[string]string{"etcd": "inactive", "kubelet": "inactive", "containerd": "inactive"}, Versions: map[string]string{}}
	saved := &SavedPlan{Version: SavedPlanVersion, Facts: fresh}
	view := &recordingView{}
	p := newPipeline(c, nil, view)
	var err error
	if saved.Plan, err = p.Plan(fresh); err != nil {
		t.Fatal(err)
	}

	// Now the host has swap on: another fact than the saved plan's.
	changed := append(freshHost("node-1"), "swap=on")
	host := newFakeHost(t, "node-1", lockRun("acquired"), probeFor(t, c, changed...), preflightFor(c), releaseRun())
	p.Conn = &fakeConnector{hosts: map[string]*fakeHost{"node-1": host}}
	_, err = p.Apply(context.Background(), ApplyRequest{Saved: saved, AutoApprove: true, LockOwner: testOwner, LockHeartbeat: time.Hour})
	if err == nil || !strings.Contains(err.Error(), "the hosts changed since the plan was saved") || !strings.Contains(err.Error(), "node-1: swap") {
		t.Fatalf("err = %v; want the saved plan refused, naming node-1's swap", err)
	}
	if len(view.events) != 0 {
		t.Errorf("view events %v; want none (refused before showing the plan)", view.events)
	}
}

// TestPipelineLockFirst: the lock is taken before any fact is read, so no
// other apply can change the hosts between the facts and the last step; a
// held lock stops the run before anything else happens.
func TestPipelineLockFirst(t *testing.T) {
	c := singleCluster(t)
	host := newFakeHost(t, "node-1", lockRun("held 3\nops@laptop pid 7 since 2026-12-01T11:00:00Z"))
	view := &recordingView{}
	res, err := newPipeline(c, host, view).Apply(context.Background(), ApplyRequest{LockOwner: testOwner, LockHeartbeat: time.Hour})
	if !errors.Is(err, ErrLockHeld) {
		t.Fatalf("err = %v; want the lock held", err)
	}
	if res.Facts != nil || res.Plan != nil || len(view.events) != 0 {
		t.Errorf("result %+v, view %v; want nothing done", res, view.events)
	}
}

// TestPipelineOrder: lock, facts, preflight, plan shown, confirmation; a
// declined plan changes nothing and releases the lock.
func TestPipelineOrder(t *testing.T) {
	c := singleCluster(t)
	host := newFakeHost(t, "node-1", lockRun("acquired"), probeFor(t, c, freshHost("node-1")...), preflightFor(c), releaseRun())
	view := &recordingView{confirm: errors.New("cancelled")}
	res, err := newPipeline(c, host, view).Apply(context.Background(), ApplyRequest{LockOwner: testOwner, LockHeartbeat: time.Hour})
	if err == nil || err.Error() != "cancelled" {
		t.Fatalf("err = %v; want the view's refusal", err)
	}
	if res.Plan == nil || res.Plan.Empty() || res.Report != nil {
		t.Errorf("result %+v; want a plan with changes and no report", res)
	}
	want := []string{"plan " + res.Plan.Summary.String(), "confirm"}
	if strings.Join(view.events, "|") != strings.Join(want, "|") {
		t.Errorf("view events %q, want %q", view.events, want)
	}
}

// TestPipelinePreflightStopsBeforePlan: every preflight problem is reported
// and no plan is shown.
func TestPipelinePreflightStopsBeforePlan(t *testing.T) {
	c := singleCluster(t)
	host := newFakeHost(t, "node-1", lockRun("acquired"), probeFor(t, c, freshHost("node-1")...), preflightFor(c, "listen=6443", "listen=10250"), releaseRun())
	view := &recordingView{}
	_, err := newPipeline(c, host, view).Apply(context.Background(), ApplyRequest{AutoApprove: true, LockOwner: testOwner, LockHeartbeat: time.Hour})
	var pe *PreflightError
	if !errors.As(err, &pe) || len(pe.Problems) != 2 {
		t.Fatalf("err = %v; want a preflight error with both taken ports", err)
	}
	if len(view.events) != 0 {
		t.Errorf("view events %v; want none", view.events)
	}
}

// TestPipelineLockHostDownReportsEveryHost: when the lock's host cannot be
// used, apply still reports every host's problem at once (read-only facts
// and preflight), not only the lock host's.
func TestPipelineLockHostDownReportsEveryHost(t *testing.T) {
	c := singleCluster(t)
	down := errors.New(`user "ops" cannot run "sudo -n true"`)
	p := newPipeline(c, nil, &recordingView{})
	p.Conn = &fakeConnector{errs: map[string]error{"node-1": down}}
	_, err := p.Apply(context.Background(), ApplyRequest{AutoApprove: true, LockOwner: testOwner, LockHeartbeat: time.Hour})
	var pe *PreflightError
	if !errors.As(err, &pe) || len(pe.Problems) != 1 || pe.Problems[0].Check != "reachable" || !strings.Contains(err.Error(), "cannot take the cluster lock") ||
		!strings.Contains(err.Error(), "node-1: reachable: "+down.Error()) {
		t.Fatalf("err = %v; want the lock failure and every host's problem", err)
	}
}

// TestPipelinePlanRenewsJoinSecrets: master-3 and compute-2 are added to a
// running cluster three days after its PKI and join secrets were made.
// Planning renews both secrets in the state directory (pending) before it
// renders, so the join configurations, and the init configuration that
// upload-certs reads on master-1, carry the new values, which the plan's
// join-secrets stage gives the cluster; the apply redacts them. Planning
// again (kprov plan --out, then apply) renews nothing more and gives the
// same plan, so a saved plan still matches. A cluster whose joins are all
// done renews nothing.
func TestPipelinePlanRenewsJoinSecrets(t *testing.T) {
	made := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	c := exampleCluster(t, "ha-stacked", made)
	old := c.State.Secrets
	facts := &plan.Facts{Hosts: map[string]*plan.HostFacts{}}
	for _, h := range c.Inventory.Hosts {
		facts.Hosts[h.Name] = &plan.HostFacts{Reachable: true, Joined: true, ControlPlane: h.Has(inventory.RoleMaster)}
	}
	facts.Hosts["master-3"] = &plan.HostFacts{Reachable: true}
	facts.Hosts["compute-2"] = &plan.HostFacts{Reachable: true}
	now := made.Add(3 * 24 * time.Hour)
	p := &Pipeline{Cluster: c, Parallel: 4, Now: func() time.Time { return now }}

	pl, err := p.Plan(facts)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := pki.Load(c.Inventory.Cluster.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	s := stored.Secrets
	if s.BootstrapToken == old.BootstrapToken || s.CertificateKey == old.CertificateKey || !s.BootstrapTokenPending || !s.CertificateKeyPending ||
		!s.BootstrapTokenCreated.Equal(now) || !s.CertificateKeyCreated.Equal(now) {
		t.Fatalf("the state directory's secrets were not renewed and marked pending at %v", now)
	}
	if c.State.Secrets != s {
		t.Error("the cluster's State still holds the old secrets")
	}
	renewed := map[plan.Op]string{}
	for _, st := range pl.Stages {
		for _, step := range st.Steps {
			if st.Kind == plan.StageJoinSecrets && step.Secret {
				renewed[step.Op] = string(step.Content)
			}
			if step.Op != plan.OpUploadFile || (step.Path != plan.KubeadmJoinPath && step.Path != plan.KubeadmInitPath) {
				continue
			}
			if !strings.Contains(string(step.Content), s.BootstrapToken.Reveal()) || strings.Contains(string(step.Content), old.BootstrapToken.Reveal()) {
				t.Errorf("%s:%s does not carry the renewed token", step.Host, step.Path)
			}
			if (step.Host == "master-1" || step.Host == "master-3") && !strings.Contains(string(step.Content), s.CertificateKey.Reveal()) {
				t.Errorf("%s:%s does not carry the renewed certificate key", step.Host, step.Path)
			}
		}
	}
	if renewed[plan.OpCreateBootstrapToken] != s.BootstrapToken.Reveal() || renewed[plan.OpUploadCerts] != s.CertificateKey.Reveal() {
		t.Error("the join-secrets stage does not give the cluster the renewed secrets")
	}
	opts, err := p.applyOptions(pl)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(opts.Secrets, s.BootstrapToken.Reveal()) || !slices.Contains(opts.Secrets, s.CertificateKey.Reveal()) {
		t.Error("the apply does not redact the renewed secrets")
	}

	now = now.Add(time.Hour)
	again, err := p.Plan(facts)
	if err != nil {
		t.Fatal(err)
	}
	if restored, err := pki.Load(c.Inventory.Cluster.StateDir); err != nil || restored.Secrets != s {
		t.Fatalf("planning again renewed the pending secrets again (%v)", err)
	}
	sp := &SavedPlan{Version: SavedPlanVersion, Facts: facts, Plan: pl}
	if err := sp.Check(facts, again, c.Inventory.Redact); err != nil {
		t.Errorf("a saved plan no longer matches once planned again: %v", err)
	}

	// Every host joined: nothing to renew, whatever the clock says.
	facts.Hosts["master-3"] = &plan.HostFacts{Reachable: true, Joined: true, ControlPlane: true}
	facts.Hosts["compute-2"] = &plan.HostFacts{Reachable: true, Joined: true}
	now = now.Add(30 * 24 * time.Hour)
	done, err := p.Plan(facts)
	if err != nil {
		t.Fatal(err)
	}
	if done.Has(plan.StageJoinSecrets) {
		t.Error("renews join secrets with nothing left to join")
	}
	if restored, _ := pki.Load(c.Inventory.Cluster.StateDir); restored == nil || restored.Secrets.BootstrapToken != s.BootstrapToken {
		t.Error("renewed the secrets in the state directory with nothing left to join")
	}
}

// convergedNode is node-1's probe answer once the single-node plan has run:
// every managed file as rendered, every unit active, kubeadm init done.
func convergedNode(t *testing.T, c *Cluster) []string {
	t.Helper()
	final, err := roles.Render(c.Inventory, c.State, roles.Options{Templates: c.Templates, EtcdBootstrap: roles.FormedEtcdBootstrap(c.Inventory.Topology.EtcdMembers)})
	if err != nil {
		t.Fatal(err)
	}
	lines := []string{"hostname=node-1", "arch=x86_64", "os_release.ID=debian", `os_release.VERSION_ID="13"`, "swap=off",
		"service.etcd=inactive", "service.kubelet=active", "service.containerd=active", "joined=yes", "control_plane=yes", "etcd_data=no"}
	for _, h := range final.Hosts {
		for _, u := range h.Units {
			lines = append(lines, "service."+u+"=active")
		}
		for _, f := range h.Files {
			lines = append(lines, "file="+f.SHA256()+" "+f.Path)
		}
	}
	return lines
}

// nodeList is `kubectl get nodes -o json` answering node-1 Ready, with the
// labels and taints the inventory gives it.
func nodeList(t *testing.T, c *Cluster) fakeRun {
	t.Helper()
	final, err := roles.Render(c.Inventory, c.State, roles.Options{Templates: c.Templates})
	if err != nil {
		t.Fatal(err)
	}
	type node struct {
		Metadata struct {
			Name   string            `json:"name"`
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
		Status struct {
			Conditions []map[string]string `json:"conditions"`
		} `json:"status"`
	}
	var list struct {
		Items []node `json:"items"`
	}
	for _, h := range final.Hosts {
		var n node
		n.Metadata.Name, n.Metadata.Labels = h.Name, h.Node.Labels
		n.Status.Conditions = []map[string]string{{"type": "Ready", "status": "True"}}
		list.Items = append(list.Items, n)
	}
	b, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	return fakeRun{cmd: scriptListNodes, stdout: string(b)}
}

// TestPipelineConvergedAsksNothing: on a converged cluster apply still
// takes the lock and reads the facts, but shows no plan and asks for no
// confirmation, so it needs neither a terminal nor --auto-approve; the
// result is an empty plan and nothing runs.
func TestPipelineConvergedAsksNothing(t *testing.T) {
	c := singleCluster(t)
	if err := os.WriteFile(c.KubeconfigPath(), []byte("apiVersion: v1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	host := newFakeHost(t, "node-1", lockRun("acquired"), probeFor(t, c, convergedNode(t, c)...), nodeList(t, c), preflightFor(c), releaseRun())
	view := &recordingView{confirm: errors.New("Confirm must not be called on a converged cluster")}
	res, err := newPipeline(c, host, view).Apply(context.Background(), ApplyRequest{LockOwner: testOwner, LockHeartbeat: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if res.Plan == nil || !res.Plan.Empty() || res.Report != nil {
		var steps []string
		for _, st := range res.Plan.Stages {
			for _, s := range st.Steps {
				steps = append(steps, st.Name()+": "+s.String())
			}
		}
		t.Fatalf("want an empty plan and no report; plan steps:\n%s", strings.Join(steps, "\n"))
	}
	if len(view.events) != 0 {
		t.Errorf("view events %q; want none (no plan shown, nothing asked)", view.events)
	}
}
