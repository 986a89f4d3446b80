package provision

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kprov/kprov/provision/plan"
)

// TestRepliesAreCapped: a host that answers with more than kprov accepts
// gets a clear error, and nothing acts on the reply: the kubeconfig is not
// written, the step fails, the lock is not taken.
func TestRepliesAreCapped(t *testing.T) {
	huge := strings.Repeat("x", maxKubeconfig+1)
	t.Run("admin kubeconfig", func(t *testing.T) {
		state := t.TempDir()
		h := newApplyHost(t, "m", applyCall{kind: "download", arg: plan.AdminKubeconfigPath, stdout: huge})
		p := &plan.Plan{Stages: []plan.Stage{{Kind: plan.StageKubeconfig, Parallel: 1, Steps: []plan.Step{
			{Op: plan.OpFetchKubeconfig, Host: "m", Path: plan.AdminKubeconfigPath}}}}}
		_, err := Apply(context.Background(), p, applyConnector{"m": h}, ApplyOptions{Inventory: applyInventory("m"), StateDir: state})
		if !errors.Is(err, ErrReplyTooLarge) || !strings.Contains(err.Error(), plan.AdminKubeconfigPath) {
			t.Fatalf("err = %v, want the kubeconfig refused as too large", err)
		}
		if _, err := os.Stat(filepath.Join(state, "admin.conf")); !os.IsNotExist(err) {
			t.Errorf("admin.conf written from a refused reply: %v", err)
		}
	})
	t.Run("step output", func(t *testing.T) {
		h := newApplyHost(t, "a", applyCall{kind: "run", arg: "x", stdout: strings.Repeat("y", maxCommandOutput+1)})
		p := &plan.Plan{Stages: []plan.Stage{{Kind: plan.StagePrepare, Parallel: 1, Steps: []plan.Step{{Op: plan.OpRunCommand, Host: "a", Command: "x"}}}}}
		_, err := Apply(context.Background(), p, applyConnector{"a": h}, ApplyOptions{Inventory: applyInventory("a")})
		if !errors.Is(err, ErrReplyTooLarge) {
			t.Fatalf("err = %v, want the output refused as too large", err)
		}
	})
	t.Run("lock answer", func(t *testing.T) {
		h := newApplyHost(t, "m", applyCall{kind: "run", arg: scriptLockAcquire(plan.LockPath, "me"), stdout: "held 1\n" + strings.Repeat("z", 5000)})
		if _, _, err := AcquireLock(context.Background(), h, LockOptions{Owner: "me"}); !errors.Is(err, ErrReplyTooLarge) {
			t.Fatalf("err = %v, want the lock answer refused as too large", err)
		}
	})
}

// TestEtcdRepliesAreCapped: every etcd client kprov opens (apply's and
// gathering's share etcdClientConfig) accepts replies up to maxEtcdReply,
// not the client library's default of 2 GiB.
func TestEtcdRepliesAreCapped(t *testing.T) {
	cfg := etcdClientConfig(context.Background(), []string{"https://192.0.2.1:2379"}, &tls.Config{}, time.Second, nil)
	if cfg.MaxCallRecvMsgSize != maxEtcdReply || maxEtcdReply > 64<<20 {
		t.Fatalf("MaxCallRecvMsgSize = %d, want %d (and at most 64 MiB)", cfg.MaxCallRecvMsgSize, maxEtcdReply)
	}
}
