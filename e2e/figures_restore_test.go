//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/lab"
)

// TestFiguresRestore100MiB measures backup and restore of a 100 MiB etcd
// database (docs/disaster-recovery.md), on the smallest lab that has one:
// a single master with stacked etcd, filled with 400 values of 256 KiB
// through etcd's client after the apply. It times kprov backup, kprov
// backup verify, and kprov restore onto a new single-master lab with
// another name on another subnet, checks that sampled values read back and
// the revision is bumped, and prints one "figure:" line per measurement.
// Figures only: KPROV_FIGURES=1 runs it, the suite skips it.
func TestFiguresRestore100MiB(t *testing.T) {
	if os.Getenv("KPROV_FIGURES") != "1" {
		t.Skip("figures only: run with KPROV_FIGURES=1")
	}
	specs := []lab.MachineSpec{{Name: "master-1", Roles: []inventory.Role{inventory.RoleMaster}}}
	old := upAppliedLab(t, specs)
	inv := old.InventoryPath()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()

	cli := etcdClientState(t, ctx, old, filepath.Join(filepath.Dir(inv), ".kprov", old.Name()))
	const n, size = 400, 256 << 10
	value := func(i int) string { return strings.Repeat(fmt.Sprintf("%08d", i), size/8) }
	start := time.Now()
	for i := range n {
		if _, err := cli.Put(ctx, fmt.Sprintf("/kprov-e2e/big/%04d", i), value(i)); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("wrote %d MiB in %s", n*size>>20, time.Since(start).Round(time.Second))
	cli.Close()

	dir := t.TempDir()
	file := filepath.Join(dir, "big.kprov-backup")
	start = time.Now()
	b, stderr, err := kprovJSON(t, "-f", inv, "backup", "-o", file, "--json")
	backupTook := time.Since(start)
	if err != nil {
		t.Fatalf("backup: %v\n%s", err, stderr)
	}
	start = time.Now()
	if out, err := kprovErr(t, "backup", "verify", file); err != nil {
		t.Fatalf("backup verify: %v\n%s", err, out)
	}
	verifyTook := time.Since(start)
	t.Logf("figure: backup of a %d MiB database (%d keys, revision %d): %s, file %d MiB; backup verify %s",
		b.Size>>20, b.Manifest.TotalKeys, b.Manifest.Revision, backupTook.Round(100*time.Millisecond), b.Size>>20, verifyTook.Round(100*time.Millisecond))

	cluster := old.Name()
	l, _, newInv := afterDisaster(t, ctx, old, specs)
	start = time.Now()
	out, err := kprovErr(t, "-f", newInv, "restore", file, "--auto-approve")
	restoreTook := time.Since(start)
	if err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	t.Logf("restore output:\n%s", out)
	t.Logf("figure: restore of the %d MiB backup onto a new single master: %s in all", b.Size>>20, restoreTook.Round(time.Second))

	cli = etcdClientState(t, ctx, l, filepath.Join(filepath.Dir(newInv), ".kprov", cluster))
	defer cli.Close()
	for _, i := range []int{0, n / 2, n - 1} {
		resp, err := cli.Get(ctx, fmt.Sprintf("/kprov-e2e/big/%04d", i))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != value(i) {
			t.Errorf("value %d did not read back", i)
		}
		if resp.Header.Revision < b.Manifest.Revision+1_000_000_000 {
			t.Errorf("revision %d, want above the snapshot's %d plus the bump", resp.Header.Revision, b.Manifest.Revision)
		}
	}
	if resp, err := cli.Get(ctx, "/kprov-e2e/big/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != n {
		t.Errorf("keys after the restore: %v, %v; want %d", resp, err, n)
	}
}
