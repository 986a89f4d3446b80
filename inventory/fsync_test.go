package inventory

import (
	"strings"
	"testing"
	"time"
)

// TestEtcdMaxFsyncLatency: the preflight's fsync limit defaults to etcd's
// guidance, takes a duration from 1ms to 1s, and refuses anything else at
// its line.
func TestEtcdMaxFsyncLatency(t *testing.T) {
	load := func(etcd string) (*Inventory, string) {
		inv, errs, _ := loadEtcdBlock(t, etcd)
		return inv, errs
	}
	if inv, errs := load(""); errs != "" || inv.Etcd.MaxFsyncLatency != 0 {
		t.Errorf("unset: %v, %q; want 0 (the preflight's default)", inv.Etcd.MaxFsyncLatency, errs)
	}
	if inv, errs := load("etcd {\n  max_fsync_latency = \"50ms\"\n}\n"); errs != "" || inv.Etcd.MaxFsyncLatency != 50*time.Millisecond {
		t.Errorf("50ms: %v, %q", inv.Etcd.MaxFsyncLatency, errs)
	}
	for value, want := range map[string]string{"fast": "is not a duration", "0s": "out of range", "2s": "out of range", "500us": "out of range"} {
		if _, errs := load("etcd {\n  max_fsync_latency = \"" + value + "\"\n}\n"); !strings.Contains(errs, want) || !strings.Contains(errs, "kprov.hcl:5") {
			t.Errorf("%s: %q, want an error at kprov.hcl:5 saying %q", value, errs, want)
		}
	}
}
