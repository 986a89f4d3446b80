package provision

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/provision/ssh"
)

// applyHost is an ssh.Executor for Apply's tests: it accepts exactly the
// commands and uploads it expects, in order, and fails the test on anything
// else, including an expectation never met.
type applyHost struct {
	t    *testing.T
	name string

	mu     sync.Mutex
	expect []applyCall
	seen   []string
}

// applyCall is one expected command ("run") or upload ("upload" of path).
type applyCall struct {
	kind, arg string
	stdout    string
	err       error
	changed   bool   // what an upload reports
	redact    string // a value the command's log lines and errors must redact
}

var _ ssh.Executor = (*applyHost)(nil)

func newApplyHost(t *testing.T, name string, calls ...applyCall) *applyHost {
	h := &applyHost{t: t, name: name, expect: calls}
	t.Cleanup(func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, c := range h.expect {
			t.Errorf("%s: expected %s %q never happened", name, c.kind, c.arg)
		}
	})
	return h
}

func (h *applyHost) next(kind, arg string) (applyCall, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen = append(h.seen, kind+" "+arg)
	if len(h.expect) == 0 || h.expect[0].kind != kind || h.expect[0].arg != arg {
		h.t.Errorf("%s: unexpected %s %q (next expected: %v)", h.name, kind, arg, h.expect)
		return applyCall{}, errors.New("unexpected call")
	}
	c := h.expect[0]
	h.expect = h.expect[1:]
	return c, nil
}

// Run answers like the real transport: stdout beyond the command's
// MaxOutput (ssh.DefaultMaxOutput when unset) is cut and reported.
func (h *applyHost) Run(_ context.Context, cmd ssh.Command) (ssh.Result, error) {
	c, err := h.next("run", cmd.Cmd)
	if err != nil {
		return ssh.Result{}, err
	}
	if c.redact != "" && !slices.Contains(cmd.Secrets, c.redact) {
		h.t.Errorf("%s: a command carrying a secret does not redact it", h.name)
	}
	limit := cmd.MaxOutput
	if limit <= 0 {
		limit = ssh.DefaultMaxOutput
	}
	res := ssh.Result{Stdout: []byte(c.stdout)}
	if len(res.Stdout) > limit {
		res.Stdout, res.Truncated = res.Stdout[:limit], true
	}
	return res, c.err
}

func (h *applyHost) Upload(_ context.Context, f ssh.FileSpec) (bool, error) {
	c, err := h.next("upload", f.Path)
	if err != nil {
		return false, err
	}
	if _, err := io.ReadAll(f.Content); err != nil {
		return false, err
	}
	return c.changed, c.err
}

// Download writes the call's stdout as the file's content.
func (h *applyHost) Download(_ context.Context, path string, w io.Writer) error {
	c, err := h.next("download", path)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, c.stdout); err != nil {
		return err
	}
	return c.err
}

func (h *applyHost) Checksum(context.Context, string) (string, bool, error) {
	h.t.Errorf("%s: unexpected checksum", h.name)
	return "", false, errors.New("unexpected checksum")
}

func (h *applyHost) Dial(_ context.Context, _, addr string) (net.Conn, error) {
	h.t.Errorf("%s: unexpected tunnel to %s", h.name, addr)
	return nil, errors.New("unexpected dial")
}

func (h *applyHost) Close() error { return nil }
func (h *applyHost) Name() string { return h.name }

type applyConnector map[string]*applyHost

func (c applyConnector) Connect(_ context.Context, h *inventory.Host) (ssh.Executor, error) {
	if x, ok := c[h.Name]; ok {
		return x, nil
	}
	return nil, &ssh.HostError{Host: h.Name, Err: errors.New("no such fake host")}
}

func applyInventory(names ...string) *inventory.Inventory {
	inv := &inventory.Inventory{Etcd: inventory.Etcd{DataDir: "/var/lib/etcd"}}
	for i, n := range names {
		inv.Hosts = append(inv.Hosts, &inventory.Host{Name: n, Address: "192.0.2." + string(rune('1'+i)), Roles: []inventory.Role{inventory.RoleCompute}})
	}
	return inv
}

// Stages run in order, each host's steps in order; the first failing stage
// stops the run, naming the host and the step, and later stages never run.
func TestApplyStopsAtFirstFailingStage(t *testing.T) {
	inv := applyInventory("a", "b")
	started := "if systemctl is-active --quiet 'x.service' && systemctl is-enabled --quiet 'x.service'; then :; else systemctl daemon-reload && systemctl enable --now 'x.service' && echo changed || { rc=$?; journalctl -u 'x.service' -n 15 --no-pager -o cat >&2; exit $rc; }; fi"
	a := newApplyHost(t, "a",
		applyCall{kind: "run", arg: "mkdir -p -- '/etc/x'"},
		applyCall{kind: "upload", arg: "/etc/x/x.conf", changed: true},
		applyCall{kind: "run", arg: "systemctl daemon-reload"},
		applyCall{kind: "run", arg: "false", err: errors.New("exit status 1")},
	)
	b := newApplyHost(t, "b",
		applyCall{kind: "run", arg: started, stdout: ""}, // already running: no change
	)
	plan := &plan.Plan{Stages: []plan.Stage{
		{Kind: plan.StagePrepare, Parallel: 2, Steps: []plan.Step{
			{Op: plan.OpUploadFile, Host: "a", Path: "/etc/x/x.conf", Mode: 0o644, Content: []byte("x")},
			{Op: plan.OpStartService, Host: "b", Service: "x.service"},
			{Op: plan.OpRunCommand, Host: "a", Command: "systemctl daemon-reload"},
		}},
		{Kind: "second", Parallel: 1, Steps: []plan.Step{{Op: plan.OpRunCommand, Host: "a", Command: "false"}}},
		{Kind: "never", Parallel: 1, Steps: []plan.Step{{Op: plan.OpRunCommand, Host: "b", Command: "never"}}},
	}}
	var events []string
	rep, err := Apply(context.Background(), plan, applyConnector{"a": a, "b": b}, ApplyOptions{Inventory: inv,
		OnStage: func(ev StageEvent) {
			if ev.Done {
				events = append(events, ev.Stage.Name()+" done")
			} else {
				events = append(events, ev.Stage.Name())
			}
		}})
	if err == nil {
		t.Fatal("apply succeeded past a failing command")
	}
	if !strings.Contains(err.Error(), `stage second: a: run-command "false": exit status 1`) {
		t.Errorf("error %q does not name the stage, host and step once each", err)
	}
	if rep.FailedStage != "second" || rep.FailedHost != "a" || rep.FailedStep != `run-command "false"` {
		t.Errorf("report failed at %q %q %q", rep.FailedStage, rep.FailedHost, rep.FailedStep)
	}
	if got := strings.Join(events, ","); got != "prepare,prepare done,second,second done" {
		t.Errorf("stage events %s", got)
	}
	if rep.Stages[0].Changed != 2 || len(rep.Changes["a"]) != 2 || len(rep.Changes["b"]) != 0 {
		t.Errorf("changes %+v, stage %+v", rep.Changes, rep.Stages[0])
	}
}

// The directories for a host's uploads are made right before its first
// upload, so a failure there is reported at that upload, not at an earlier
// step of the stage, and the error keeps what kprov was doing, naming the
// host once.
func TestApplyMakeDirsFailureNamesTheUpload(t *testing.T) {
	lost := &ssh.HostError{Host: "a", Err: errors.New(`run "mkdir -p -- '/etc/x'": connection lost`)}
	a := newApplyHost(t, "a",
		applyCall{kind: "run", arg: "true"},
		applyCall{kind: "run", arg: "mkdir -p -- '/etc/x'", err: lost},
	)
	plan := &plan.Plan{Stages: []plan.Stage{{Kind: plan.StageEtcdAdd, Target: "a", Parallel: 1, Steps: []plan.Step{
		{Op: plan.OpRunCommand, Host: "a", Command: "true"},
		{Op: plan.OpUploadFile, Host: "a", Path: "/etc/x/x.conf", Mode: 0o644, Content: []byte("x")},
	}}}}
	rep, err := Apply(context.Background(), plan, applyConnector{"a": a}, ApplyOptions{Inventory: applyInventory("a")})
	if rep.FailedStep != "upload-file /etc/x/x.conf (0644)" {
		t.Errorf("failed at %q, want the upload", rep.FailedStep)
	}
	want := `stage etcd/add/a: a: upload-file /etc/x/x.conf (0644): create directories for uploads: run "mkdir -p -- '/etc/x'": connection lost`
	if err == nil || err.Error() != want {
		t.Errorf("error\n %v\nwant\n %s", err, want)
	}
}

// An artifact whose local file does not match the inventory's checksum is
// refused before anything is sent, and the error names the file.
func TestApplyRefusesArtifactWithWrongChecksum(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "etcd")
	if err := os.WriteFile(src, []byte("not the etcd you pinned"), 0o755); err != nil {
		t.Fatal(err)
	}
	good := sha256.Sum256([]byte("not the etcd you pinned"))
	a := newApplyHost(t, "a",
		applyCall{kind: "run", arg: "mkdir -p -- '/usr/local/bin'"},
		applyCall{kind: "upload", arg: "/usr/local/bin/etcd", changed: true},
		applyCall{kind: "run", arg: "mkdir -p -- '/usr/local/bin'"},
	)
	step := plan.Step{Op: plan.OpUploadFile, Host: "a", Path: "/usr/local/bin/etcd", Mode: 0o755, Source: src, SHA256: hex.EncodeToString(good[:])}
	plan := &plan.Plan{Stages: []plan.Stage{{Kind: plan.StagePrepare, Parallel: 1, Steps: []plan.Step{step}}}}
	if _, err := Apply(context.Background(), plan, applyConnector{"a": a}, ApplyOptions{Inventory: applyInventory("a")}); err != nil {
		t.Fatalf("matching artifact: %v", err)
	}
	plan.Stages[0].Steps[0].SHA256 = strings.Repeat("0", 64)
	_, err := Apply(context.Background(), plan, applyConnector{"a": a}, ApplyOptions{Inventory: applyInventory("a")})
	if err == nil || !strings.Contains(err.Error(), src) || !strings.Contains(err.Error(), "refusing to install") {
		t.Errorf("tampered artifact: %v", err)
	}
}

// wipe-data-dir removes the inventory's etcd data directory and nothing else.
func TestApplyWipeOnlyTheDataDir(t *testing.T) {
	inv := applyInventory("a")
	a := newApplyHost(t, "a",
		applyCall{kind: "run", arg: scriptWipeDataDir("/var/lib/etcd"), stdout: "changed\n"},
	)
	for _, path := range []string{"/var/lib/etcd", "/", "/var/lib", "/var/lib/etcd/../..", "var/lib/etcd"} {
		plan := &plan.Plan{Stages: []plan.Stage{{Kind: "wipe", Parallel: 1, Steps: []plan.Step{{Op: plan.OpWipeDataDir, Host: "a", Path: path}}}}}
		rep, err := Apply(context.Background(), plan, applyConnector{"a": a}, ApplyOptions{Inventory: inv})
		if path == "/var/lib/etcd" {
			if err != nil || rep.Changed() != 1 {
				t.Errorf("wipe %s: %v, %d changed", path, err, rep.Changed())
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "refusing to wipe") {
			t.Errorf("wipe %s: %v", path, err)
		}
	}
}

// A kubeadm init or join that already took effect is never run again; one
// that did not is validated by the host's kubeadm before it runs. A kubeadm
// an earlier apply left running is waited for first, and its result counts.
func TestApplyKubeadmSkipsDoneAndValidatesFirst(t *testing.T) {
	inv := applyInventory("m", "w")
	inv.Hosts[0].Roles = []inventory.Role{inventory.RoleMaster}
	m := newApplyHost(t, "m",
		applyCall{kind: "run", arg: scriptKubeadmRunning, stdout: "running\n"},
		applyCall{kind: "run", arg: scriptKubeadmRunning, stdout: "running\n"},
		applyCall{kind: "run", arg: scriptKubeadmRunning},
		applyCall{kind: "run", arg: "if [ -e '/etc/kubernetes/manifests/kube-apiserver.yaml' ]; then echo present; fi", stdout: "present\n"},
	)
	w := newApplyHost(t, "w",
		applyCall{kind: "run", arg: scriptKubeadmRunning},
		applyCall{kind: "run", arg: "if [ -e '/etc/kubernetes/kubelet.conf' ]; then echo present; fi"},
		applyCall{kind: "run", arg: binPath + "kubeadm config validate --config '/etc/kprov/kubeadm-join.yaml'"},
		applyCall{kind: "run", arg: scriptKubeadm("kubeadm join --config /etc/kprov/kubeadm-join.yaml")},
	)
	plan := &plan.Plan{Stages: []plan.Stage{
		{Kind: plan.StageControlPlaneInit, Target: "m", Parallel: 1, Steps: []plan.Step{{Op: plan.OpKubeadmInit, Host: "m", Command: "kubeadm init --config /etc/kprov/kubeadm-init.yaml --upload-certs"}}},
		{Kind: plan.StageNodesJoin, Parallel: 2, Steps: []plan.Step{{Op: plan.OpKubeadmJoin, Host: "w", Command: "kubeadm join --config /etc/kprov/kubeadm-join.yaml"}}},
	}}
	rep, err := Apply(context.Background(), plan, applyConnector{"m": m, "w": w}, ApplyOptions{Inventory: inv})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Changes["m"]) != 0 || len(rep.Changes["w"]) != 1 {
		t.Errorf("changes %v", rep.Changes)
	}
}

// A cancelled run starts no further stage.
func TestApplyCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	plan := &plan.Plan{Stages: []plan.Stage{{Kind: plan.StagePrepare, Parallel: 1, Steps: []plan.Step{{Op: plan.OpRunCommand, Host: "a", Command: "x"}}}}}
	a := newApplyHost(t, "a")
	if _, err := Apply(ctx, plan, applyConnector{"a": a}, ApplyOptions{Inventory: applyInventory("a")}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled apply: %v", err)
	}
}

// The lock is taken with noclobber, refused with the holder named, broken
// only when asked, and released only by its owner.
func TestLock(t *testing.T) {
	owner := "me@op pid 1"
	holder := "you@there pid 7 since 2026-01-01T00:00:00Z"
	acquire := scriptLockAcquire(plan.LockPath, owner)
	h := newApplyHost(t, "m",
		// A live holder: refused, also with --break-lock, which never removes a live lock.
		applyCall{kind: "run", arg: acquire, stdout: "held 4\n" + holder + "\n"},
		applyCall{kind: "run", arg: acquire, stdout: "held 4\n" + holder + "\n"},
		// A stale lock: refused without --break-lock, naming it stale.
		applyCall{kind: "run", arg: acquire, stdout: "held 95\n" + holder + "\n"},
		// A stale lock with --break-lock: removed only while still the same stale holder's, then taken.
		applyCall{kind: "run", arg: acquire, stdout: "held 95\n" + holder + "\n"},
		applyCall{kind: "run", arg: scriptLockBreakStale(plan.LockPath, holder, DefaultLockStaleAfter), stdout: "broken\n"},
		applyCall{kind: "run", arg: acquire, stdout: "acquired\n"},
		applyCall{kind: "run", arg: scriptLockRelease(plan.LockPath, owner)},
	)
	ctx := context.Background()
	_, _, err := AcquireLock(ctx, h, LockOptions{Owner: owner})
	var held *LockHeldError
	if !errors.As(err, &held) || !errors.Is(err, ErrLockHeld) || held.Stale || !strings.Contains(err.Error(), holder) || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("live lock: %v", err)
	}
	_, broken, err := AcquireLock(ctx, h, LockOptions{Owner: owner, Break: true})
	if !errors.As(err, &held) || !held.BreakRefused || broken != "" || !strings.Contains(err.Error(), "--break-lock only removes a lock not refreshed for 30s") {
		t.Fatalf("--break-lock on a live lock: %v (broke %q)", err, broken)
	}
	_, _, err = AcquireLock(ctx, h, LockOptions{Owner: owner})
	if !errors.As(err, &held) || !held.Stale || held.Age != 95*time.Second || !strings.Contains(err.Error(), "run again with --break-lock") {
		t.Fatalf("stale lock: %v", err)
	}
	lock, broken, err := AcquireLock(ctx, h, LockOptions{Owner: owner, Break: true})
	if err != nil || broken != holder {
		t.Fatalf("break a stale lock: %v, broke %q", err, broken)
	}
	if err := lock.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestLockStaleBreakLosesRace: when the stale lock was refreshed or taken
// over between the look and the removal, nothing is removed and the apply
// is refused.
func TestLockStaleBreakLosesRace(t *testing.T) {
	owner, holder := "me@op pid 1", "you@there pid 7"
	h := newApplyHost(t, "m",
		applyCall{kind: "run", arg: scriptLockAcquire(plan.LockPath, owner), stdout: "held 31\n" + holder + "\n"},
		applyCall{kind: "run", arg: scriptLockBreakStale(plan.LockPath, holder, DefaultLockStaleAfter), stdout: ""},
	)
	if _, _, err := AcquireLock(context.Background(), h, LockOptions{Owner: owner, Break: true}); !errors.Is(err, ErrLockHeld) {
		t.Fatalf("err = %v, want the lock still held", err)
	}
}

// TestLockHeartbeat: the holder refreshes its lock; when a refresh finds
// the lock gone (broken by someone else), the apply's context is cancelled
// with ErrLockLost.
func TestLockHeartbeat(t *testing.T) {
	owner := "me@op pid 1"
	h := newApplyHost(t, "m",
		applyCall{kind: "run", arg: scriptLockAcquire(plan.LockPath, owner), stdout: "acquired\n"},
		applyCall{kind: "run", arg: scriptLockRefresh(plan.LockPath, owner), stdout: "ok\n"},
		applyCall{kind: "run", arg: scriptLockRefresh(plan.LockPath, owner), stdout: "lost\n"},
	)
	lock, _, err := AcquireLock(context.Background(), h, LockOptions{Owner: owner, Heartbeat: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := lock.Keep(context.Background())
	defer stop()
	<-ctx.Done()
	if !errors.Is(context.Cause(ctx), ErrLockLost) {
		t.Fatalf("cause %v, want ErrLockLost", context.Cause(ctx))
	}
}

// pendingSecretsDir is a state directory whose join secrets a plan has just
// renewed (what pki.RenewBootstrapToken and RenewCertificateKey leave).
func pendingSecretsDir(t *testing.T, token, key string, renewed time.Time) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(map[string]any{
		"bootstrapToken": token, "bootstrapTokenCreated": renewed, "bootstrapTokenPending": true,
		"certificateKey": key, "certificateKeyCreated": renewed, "certificateKeyPending": true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secrets.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The renewal stage runs exactly these commands on the master, each with
// its secret redacted, and then records in the state directory that the
// cluster has the secrets (their lifetimes start at the apply's clock). No
// error or report carries a secret. Interrupted after the token, a second
// run repeats the same commands, which is harmless (the script replaces a
// token with the same ID; kubeadm replaces uploaded certificates), and
// converges the state directory.
func TestApplyRenewsJoinSecrets(t *testing.T) {
	const token = "renewd.0123456789abcdef"
	key := strings.Repeat("c", 64)
	renewed := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	applied := renewed.Add(2 * time.Hour)
	dir := pendingSecretsDir(t, token, key, renewed)
	inv := applyInventory("m")
	inv.Hosts[0].Roles = []inventory.Role{inventory.RoleMaster}

	createToken := binPath + "if kubectl --kubeconfig /etc/kubernetes/admin.conf -n kube-system get secret 'bootstrap-token-renewd' -o name --request-timeout=20s >/dev/null 2>&1; " +
		"then kubeadm token delete 'renewd'; fi && kubeadm token create '" + token + "' --ttl 24h0m0s --description 'kprov bootstrap token' " +
		"--usages signing,authentication --groups system:bootstrappers:kubeadm:default-node-token >/dev/null"
	validate := binPath + "kubeadm config validate --config '/etc/kprov/kubeadm-init.yaml'"
	upload := binPath + "kubeadm init phase upload-certs --upload-certs --skip-certificate-key-print --config '/etc/kprov/kubeadm-init.yaml' >/dev/null"
	m := newApplyHost(t, "m",
		// First run: interrupted at the upload.
		applyCall{kind: "run", arg: createToken, redact: token},
		applyCall{kind: "run", arg: validate, redact: key},
		applyCall{kind: "run", arg: upload, redact: key, err: errors.New("exit status 1")},
		// Second run: the same commands again.
		applyCall{kind: "run", arg: createToken, redact: token},
		applyCall{kind: "run", arg: validate, redact: key},
		applyCall{kind: "run", arg: upload, redact: key},
	)
	pl := &plan.Plan{Stages: []plan.Stage{{Kind: plan.StageJoinSecrets, Target: "m", Parallel: 1, Steps: []plan.Step{
		{Op: plan.OpCreateBootstrapToken, Host: "m", Secret: true, Content: []byte(token)},
		{Op: plan.OpUploadCerts, Host: "m", Path: plan.KubeadmInitPath, Secret: true, Content: []byte(key)},
	}}}}
	opts := ApplyOptions{Inventory: inv, StateDir: dir, Now: func() time.Time { return applied }}

	rep, err := Apply(context.Background(), pl, applyConnector{"m": m}, opts)
	if err == nil || !strings.Contains(err.Error(), "upload-certs --config /etc/kprov/kubeadm-init.yaml: exit status 1") {
		t.Fatalf("interrupted run: %v", err)
	}
	if strings.Contains(err.Error(), token) || strings.Contains(err.Error(), key) {
		t.Error("a join secret reached the error")
	}
	secrets := readStateSecrets(t, dir)
	if secrets["bootstrapTokenPending"] != nil || secrets["bootstrapTokenCreated"] != applied.Format(time.RFC3339) || secrets["certificateKeyPending"] != true {
		t.Errorf("after the token: %v", redactSecrets(secrets))
	}

	rep2, err := Apply(context.Background(), pl, applyConnector{"m": m}, opts)
	if err != nil {
		t.Fatal(err)
	}
	secrets = readStateSecrets(t, dir)
	if secrets["certificateKeyPending"] != nil || secrets["certificateKeyCreated"] != applied.Format(time.RFC3339) || secrets["bootstrapToken"] != token || secrets["certificateKey"] != key {
		t.Errorf("after the second run: %v", redactSecrets(secrets))
	}
	if len(rep2.Changes["m"]) != 2 {
		t.Errorf("second run changed %d steps, want 2", len(rep2.Changes["m"]))
	}
	for _, r := range []*Report{rep, rep2} {
		js, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(js), token) || strings.Contains(string(js), key) {
			t.Error("a join secret reached the apply's report")
		}
	}
}

// Without a state directory to record the renewal in, nothing runs.
func TestApplyRenewalNeedsTheStateDir(t *testing.T) {
	m := newApplyHost(t, "m")
	pl := &plan.Plan{Stages: []plan.Stage{{Kind: plan.StageJoinSecrets, Target: "m", Parallel: 1, Steps: []plan.Step{
		{Op: plan.OpCreateBootstrapToken, Host: "m", Secret: true, Content: []byte("abcdef.0123456789abcdef")},
	}}}}
	_, err := Apply(context.Background(), pl, applyConnector{"m": m}, ApplyOptions{Inventory: applyInventory("m")})
	if err == nil || !strings.Contains(err.Error(), "no state directory") || strings.Contains(err.Error(), "0123456789abcdef") {
		t.Errorf("renewal without a state directory: %v", err)
	}
}

func readStateSecrets(t *testing.T, dir string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "secrets.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// redactSecrets is secrets.json without its values, for a test's message.
func redactSecrets(m map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		if k == "bootstrapToken" || k == "certificateKey" {
			v = "[redacted]"
		}
		out[k] = v
	}
	return out
}

// Each step is reported as it starts and as it ends, one host's events in
// its steps' order, with whether it changed something; a failed step ends
// with its error, and a host that cannot be reached gets only an ending.
func TestApplyStepEvents(t *testing.T) {
	inv := applyInventory("a", "b", "c")
	a := newApplyHost(t, "a",
		applyCall{kind: "run", arg: "one", stdout: ""},
		applyCall{kind: "run", arg: "mkdir -p -- '/etc/x'"},
		applyCall{kind: "upload", arg: "/etc/x/x.conf", changed: false}, // already there
	)
	b := newApplyHost(t, "b", applyCall{kind: "run", arg: "one", err: errors.New("exit status 3")})
	pl := &plan.Plan{Stages: []plan.Stage{{Kind: plan.StagePrepare, Parallel: 3, Steps: []plan.Step{
		{Op: plan.OpRunCommand, Host: "a", Command: "one"},
		{Op: plan.OpRunCommand, Host: "b", Command: "one"},
		{Op: plan.OpRunCommand, Host: "c", Command: "one"},
		{Op: plan.OpUploadFile, Host: "a", Path: "/etc/x/x.conf", Mode: 0o644, Content: []byte("x")},
		{Op: plan.OpRunCommand, Host: "b", Command: "two"},
	}}}}
	var mu sync.Mutex
	events := map[string][]string{}
	_, err := Apply(context.Background(), pl, applyConnector{"a": a, "b": b}, ApplyOptions{Inventory: inv,
		OnStep: func(ev StepEvent) {
			e := "start " + ev.Step.String()
			switch {
			case ev.Done && ev.Err != nil:
				e = "failed " + ev.Step.String()
			case ev.Done && ev.Changed:
				e = "changed " + ev.Step.String()
			case ev.Done:
				e = "unchanged " + ev.Step.String()
			}
			if ev.Stage.Kind != plan.StagePrepare {
				t.Errorf("event for stage %s", ev.Stage.Name())
			}
			mu.Lock()
			events[ev.Host] = append(events[ev.Host], e)
			mu.Unlock()
		}})
	if err == nil {
		t.Fatal("apply succeeded with b failing and c unreachable")
	}
	want := map[string][]string{
		"a": {`start run-command "one"`, `changed run-command "one"`, "start upload-file /etc/x/x.conf (0644)", "unchanged upload-file /etc/x/x.conf (0644)"},
		"b": {`start run-command "one"`, `failed run-command "one"`},
		"c": {`failed run-command "one"`},
	}
	for host, w := range want {
		if got := events[host]; strings.Join(got, "|") != strings.Join(w, "|") {
			t.Errorf("%s: events\n %q\nwant\n %q", host, got, w)
		}
	}
}
