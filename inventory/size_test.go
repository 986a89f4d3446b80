package inventory

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

const sizeCluster = `cluster "big" {
  kubernetes_version     = "1.37.2"
  control_plane_endpoint = "api.big.internal:6443"
  pod_subnet             = "100.64.0.0/10" # a /24 for each of up to 16384 nodes
}
host "cp-1" {
  address = "172.16.0.11"
  roles   = ["master"]
}
`

// workers returns a dynamic host block generating n workers (range() stops
// at 1024 values, so the indexes come from blocks of 1000).
func workers(n int, content string) string {
	return `
dynamic "host" {
  for_each = [for n in flatten([for b in range(` + strconv.Itoa(n/1000+1) + `) : [for i in range(1000) : b * 1000 + i]]) : n if n < ` + strconv.Itoa(n) + `]
  labels   = [format("worker-%07d", host.value)]
  content {
    address = cidrhost("10.0.0.0/8", host.value + 10)
    roles   = ["compute"]
` + content + `
  }
}
`
}

// TestTooManyHostsStopsEarly: the 100,000 generated hosts took 26 s
// and 540 MB before kprov said anything. Now the for_each is refused at its
// line before one host is generated: the whole load allocates a fraction of
// what expanding and decoding them did (about 2 GB).
func TestTooManyHostsStopsEarly(t *testing.T) {
	src := []byte(sizeCluster + workers(100000, ""))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	inv, diags := Parse(src, "big.hcl", testOptions())
	runtime.ReadMemStats(&after)
	if !hasDiag(diags, hcl.DiagError, "Too many hosts") || len(diags) != 1 {
		t.Fatalf("want one Too many hosts error, got %v", diags)
	}
	if s := diags[0].Subject; s == nil || s.Start.Line != 12 || !strings.Contains(diags[0].Detail, "would generate 100000 hosts; with the 1 already counted") {
		t.Errorf("the error should be at the for_each (big.hcl:12) and count the hosts: %v", diags[0])
	}
	if len(inv.Hosts) != 0 {
		t.Errorf("%d hosts decoded", len(inv.Hosts))
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<30 {
		t.Errorf("refusing 100,000 hosts allocated %d MB", alloc>>20)
	}
}

// TestHostLimitBoundary: MaxHosts hosts load; one more is refused, whether it
// comes from a dynamic block or a host block, and a dynamic block nested in
// hosts is capped too.
func TestHostLimitBoundary(t *testing.T) {
	inv, diags := Parse([]byte(sizeCluster+workers(MaxHosts-1, "")), "big.hcl", testOptions())
	if diags.HasErrors() || len(inv.Hosts) != MaxHosts {
		t.Errorf("%d hosts: %v", len(inv.Hosts), diags)
	}

	_, diags = Parse([]byte(sizeCluster+workers(MaxHosts, "")), "big.hcl", testOptions())
	if !hasDiag(diags, hcl.DiagError, "Too many hosts") {
		t.Errorf("MaxHosts+1 hosts: %v", diags)
	}

	// Two dynamic blocks that fit alone but not together.
	_, diags = Parse([]byte(sizeCluster+workers(6000, "")+strings.ReplaceAll(workers(6000, ""), "worker-", "extra-")), "big.hcl", testOptions())
	if !hasDiag(diags, hcl.DiagError, "Too many hosts") || !strings.Contains(diags.Error(), "with the 6001 already counted") {
		t.Errorf("two dynamic blocks: %v", diags)
	}

	// MaxHosts+1 host blocks written out.
	var b strings.Builder
	b.WriteString(sizeCluster)
	for i := range MaxHosts {
		b.WriteString("host \"w-" + strconv.Itoa(i) + "\" {\n  address = \"10.1.0.1\"\n  roles = [\"compute\"]\n}\n")
	}
	_, diags = Parse([]byte(b.String()), "big.hcl", testOptions())
	if !hasDiag(diags, hcl.DiagError, "Too many hosts") || diags[0].Subject.Start.Line != 10+4*(MaxHosts-1) {
		t.Errorf("MaxHosts+1 host blocks: want an error at the last one, got %v", diags)
	}

	// 100 hosts, each with a dynamic ssh block of 1000: over MaxGeneratedBlocks.
	nested := `    dynamic "ssh" {
      for_each = range(1000)
      content { port = 22 }
    }`
	_, diags = Parse([]byte(sizeCluster+workers(100, nested)), "big.hcl", testOptions())
	if !hasDiag(diags, hcl.DiagError, "Too many generated blocks") {
		t.Errorf("nested dynamic blocks: %v", diags)
	}
}

// TestInventoryTooLarge: a file over MaxInventoryBytes is refused, and Load
// reads no more of it than one byte past the limit.
func TestInventoryTooLarge(t *testing.T) {
	big := append([]byte(sizeCluster), []byte(strings.Repeat("# padding\n", MaxInventoryBytes/10+1))...)
	if _, diags := Parse(big, "big.hcl", testOptions()); !hasDiag(diags, hcl.DiagError, "Inventory too large") {
		t.Errorf("Parse: %v", diags)
	}
	path := filepath.Join(t.TempDir(), "big.hcl")
	if err := os.WriteFile(path, append(big, make([]byte, 4096)...), 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := readInventory(path)
	if err != nil || len(src) != MaxInventoryBytes+1 {
		t.Errorf("readInventory read %d bytes, %v", len(src), err)
	}
	if _, diags := Load(path, testOptions()); !hasDiag(diags, hcl.DiagError, "Inventory too large") {
		t.Errorf("Load: %v", diags)
	}
}
