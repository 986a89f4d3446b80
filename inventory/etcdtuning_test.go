package inventory

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// loadEtcdBlock loads a one-master inventory with the given etcd block and
// returns it with its errors and its warnings about etcd, one per line.
func loadEtcdBlock(t *testing.T, etcd string) (*Inventory, string, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kprov.hcl")
	src := "cluster \"c\" {\n  kubernetes_version = \"1.37.2\"\n}\n" + etcd +
		"host \"m\" {\n  address = \"192.0.2.1\"\n  roles   = [\"master\"]\n}\n"
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	inv, diags := Load(path, Options{})
	var errs, warns []string
	for _, d := range diags {
		if d.Severity == 1 {
			errs = append(errs, d.Error())
		} else if strings.Contains(d.Summary, "etcd") {
			warns = append(warns, d.Error())
		}
	}
	return inv, strings.Join(errs, "\n"), strings.Join(warns, "\n")
}

// TestEtcdTuning: heartbeat_interval, election_timeout, quota_backend_bytes
// and snapshot_count default to etcd's guidance, take what etcd takes, and
// refuse at their line what etcd would refuse to start with.
func TestEtcdTuning(t *testing.T) {
	inv, errs, warns := loadEtcdBlock(t, "")
	if errs != "" || warns != "" {
		t.Fatalf("defaults: errors %q, warnings %q", errs, warns)
	}
	if e := inv.Etcd; e.HeartbeatInterval != 100*time.Millisecond || e.ElectionTimeout != time.Second || e.QuotaBackendBytes != 8<<30 || e.SnapshotCount != 10000 {
		t.Errorf("defaults: %+v", e)
	}

	inv, errs, warns = loadEtcdBlock(t, "etcd {\n  heartbeat_interval = \"250ms\"\n  election_timeout = \"2500ms\"\n  quota_backend_bytes = \"4GiB\"\n  snapshot_count = 50000\n}\n")
	if errs != "" || warns != "" {
		t.Fatalf("valid settings: errors %q, warnings %q", errs, warns)
	}
	if e := inv.Etcd; e.HeartbeatInterval != 250*time.Millisecond || e.ElectionTimeout != 2500*time.Millisecond || e.QuotaBackendBytes != 4<<30 || e.SnapshotCount != 50000 {
		t.Errorf("valid settings: %+v", e)
	}

	for _, c := range []struct{ block, wantErr, wantWarn string }{
		{"etcd {\n  heartbeat_interval = \"soon\"\n}\n", "kprov.hcl:5,3-30: Invalid etcd heartbeat_interval; \"soon\" is not a duration", ""},
		{"etcd {\n  heartbeat_interval = \"100500us\"\n}\n", "kprov.hcl:5,3-34: Invalid etcd heartbeat_interval; 100.5ms is not a whole number of milliseconds", ""},
		{"etcd {\n  heartbeat_interval = \"6s\"\n}\n", "Invalid etcd heartbeat_interval; 6s is out of range", ""},
		{"etcd {\n  election_timeout = \"60s\"\n}\n", "kprov.hcl:5,3-27: Invalid etcd election_timeout; 1m0s is out of range", ""},
		// etcd refuses to start under 5 heartbeats; the error is at the
		// field that was set.
		{"etcd {\n  heartbeat_interval = \"300ms\"\n}\n", "kprov.hcl:5,3-31: etcd election_timeout too short; election_timeout 1s is under 5 heartbeats (heartbeat_interval 300ms)", ""},
		{"etcd {\n  election_timeout = \"400ms\"\n}\n", "kprov.hcl:5,3-29: etcd election_timeout too short", ""},
		{"etcd {\n  heartbeat_interval = \"150ms\"\n}\n", "", "kprov.hcl:5,3-31: etcd election_timeout under 10 heartbeats; election_timeout 1s is 6.7 heartbeats"},
		{"etcd {\n  quota_backend_bytes = \"lots\"\n}\n", "kprov.hcl:5,3-31: Invalid etcd quota_backend_bytes; \"lots\" is not a size", ""},
		{"etcd {\n  quota_backend_bytes = \"1MiB\"\n}\n", "Invalid etcd quota_backend_bytes; 1MiB is out of range: give 64MiB to 100GiB", ""},
		{"etcd {\n  quota_backend_bytes = \"200GB\"\n}\n", "200GB is out of range", ""},
		{"etcd {\n  quota_backend_bytes = \"16GiB\"\n}\n", "", "kprov.hcl:5,3-32: etcd quota_backend_bytes above 8GiB"},
		{"etcd {\n  snapshot_count = 5\n}\n", "kprov.hcl:5,3-21: Invalid etcd snapshot_count; 5 is out of range", ""},
	} {
		_, errs, warns := loadEtcdBlock(t, c.block)
		if c.wantErr == "" && errs != "" || c.wantErr != "" && !strings.Contains(errs, c.wantErr) {
			t.Errorf("%q: errors %q, want %q", c.block, errs, c.wantErr)
		}
		if c.wantWarn == "" && warns != "" || c.wantWarn != "" && !strings.Contains(warns, c.wantWarn) {
			t.Errorf("%q: warnings %q, want %q", c.block, warns, c.wantWarn)
		}
	}

	for in, want := range map[string]int64{"1024": 1024, "512MiB": 512 << 20, "2 GiB": 2 << 30, "3GB": 3e9, "10KB": 10000} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5GiB", "GiB", "99999999999TiB"} {
		if got, err := parseBytes(in); err == nil {
			t.Errorf("parseBytes(%q) = %d, want an error", in, got)
		}
	}
}

// TestConnectAttempts: connect_attempts defaults to one short retry, a
// host's ssh block overrides the top level's, and a value out of 1..30 is
// refused at its line.
func TestConnectAttempts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kprov.hcl")
	load := func(src string) (*Inventory, string) {
		t.Helper()
		if err := os.WriteFile(path, []byte("cluster \"c\" {\n  kubernetes_version = \"1.37.2\"\n}\n"+src), 0o600); err != nil {
			t.Fatal(err)
		}
		inv, diags := Load(path, Options{})
		var errs []string
		for _, d := range diags.Errs() {
			errs = append(errs, d.Error())
		}
		return inv, strings.Join(errs, "\n")
	}
	inv, errs := load("ssh {\n  connect_attempts = 6\n}\nhost \"a\" {\n  address = \"192.0.2.1\"\n  roles = [\"master\"]\n}\n" +
		"host \"b\" {\n  address = \"192.0.2.2\"\n  roles = [\"compute\"]\n  ssh {\n    connect_attempts = 1\n  }\n}\n")
	if errs != "" {
		t.Fatal(errs)
	}
	if a, b := inv.Host("a").SSH.ConnectAttempts, inv.Host("b").SSH.ConnectAttempts; a != 6 || b != 1 {
		t.Errorf("connect_attempts: a %d (want the top level's 6), b %d (want its own 1)", a, b)
	}
	inv, errs = load("host \"a\" {\n  address = \"192.0.2.1\"\n  roles = [\"master\"]\n}\n")
	if errs != "" || inv.Host("a").SSH.ConnectAttempts != DefaultConnectAttempts {
		t.Errorf("default: %d, %q; want %d", inv.Host("a").SSH.ConnectAttempts, errs, DefaultConnectAttempts)
	}
	for _, n := range []string{"0", "31"} {
		if _, errs := load("ssh {\n  connect_attempts = " + n + "\n}\nhost \"a\" {\n  address = \"192.0.2.1\"\n  roles = [\"master\"]\n}\n"); !strings.Contains(errs, "kprov.hcl:5,3-") || !strings.Contains(errs, "Invalid connect_attempts; "+n+" is not from 1 to 30") {
			t.Errorf("connect_attempts = %s: %q", n, errs)
		}
	}
}
