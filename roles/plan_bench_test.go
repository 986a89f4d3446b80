package roles

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
)

// BenchmarkPlan5000 plans a fresh 5000-host cluster (3 masters, 3 external
// etcd members, 4994 compute nodes): rendering every file and ordering every step.
func BenchmarkPlan5000(b *testing.B) {
	src := []byte(`
cluster "big" {
  kubernetes_version     = "1.37.2"
  control_plane_endpoint = "api.big.internal:6443"
}
dynamic "host" {
  for_each = range(3)
  labels   = ["cp-${host.value}"]
  content {
    address = cidrhost("172.16.0.0/24", host.value + 10)
    roles   = ["master"]
  }
}
dynamic "host" {
  for_each = range(3)
  labels   = ["etcd-${host.value}"]
  content {
    address = cidrhost("172.16.1.0/24", host.value + 10)
    roles   = ["etcd"]
  }
}
dynamic "host" {
  for_each = [for n in flatten([for b in range(5) : [for i in range(1000) : b * 1000 + i]]) : n if n < 4994]
  labels   = [format("worker-%04d", host.value)]
  content {
    address = cidrhost("172.17.0.0/16", host.value + 10)
    roles   = ["compute"]
  }
}
`)
	inv, diags := inventory.Parse(src, filepath.Join(b.TempDir(), "big.hcl"), inventory.Options{HomeDir: "/root", Environ: func() []string { return nil }})
	if diags.HasErrors() || len(inv.Hosts) != 5000 {
		b.Fatalf("%d hosts: %v", len(inv.Hosts), diags)
	}
	st, _, err := pki.Ensure(filepath.Join(b.TempDir(), "state"), PKIRequest(inv), time.Now())
	if err != nil {
		b.Fatal(err)
	}
	names := make([]string, len(inv.Hosts))
	for i, h := range inv.Hosts {
		names[i] = h.Name
	}
	facts := plan.FreshFacts(names)
	b.ReportAllocs()
	for b.Loop() {
		pl, err := Plan(inv, facts, st, PlanOptions{Parallel: 10})
		if err != nil || pl.Summary.NodesToJoin != 4994 {
			b.Fatalf("%v, %+v", err, pl.Summary)
		}
	}
}
