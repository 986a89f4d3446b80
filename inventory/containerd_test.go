package inventory

import (
	"testing"
)

// TestNodePodSubnet: the i-th Kubernetes node in inventory order gets the
// i-th /24 (IPv4) or /64 (IPv6) of pod_subnet; a dedicated etcd host none.
func TestNodePodSubnet(t *testing.T) {
	for _, c := range []struct {
		podSubnet string
		want      map[string]string
	}{
		{"10.244.0.0/16", map[string]string{"cp-1": "10.244.0.0/24", "etcd-1": "", "worker-1": "10.244.1.0/24", "worker-2": "10.244.2.0/24"}},
		{"172.16.4.0/22", map[string]string{"cp-1": "172.16.4.0/24", "worker-1": "172.16.5.0/24", "worker-2": "172.16.6.0/24"}},
		{"fd00:10:244::/56", map[string]string{"cp-1": "fd00:10:244::/64", "worker-1": "fd00:10:244:1::/64", "worker-2": "fd00:10:244:2::/64"}},
	} {
		src := `cluster "c" {
  kubernetes_version = "1.37.2"
  pod_subnet = "` + c.podSubnet + `"
  service_subnet = "10.96.0.0/16"
}
host "cp-1" {
  address = "192.0.2.10"
  roles   = ["master"]
}
host "etcd-1" {
  address = "192.0.2.11"
  roles   = ["etcd"]
}
host "worker-1" {
  address = "192.0.2.21"
  roles   = ["compute"]
}
host "worker-2" {
  address = "192.0.2.22"
  roles   = ["infra", "compute"]
}
`
		inv, diags := Parse([]byte(src), "c.hcl", testOptions())
		if diags.HasErrors() {
			t.Fatalf("%s: %v", c.podSubnet, diags)
		}
		for host, want := range c.want {
			got, ok := inv.NodePodSubnet(host)
			if (want == "") == ok || ok && got.String() != want {
				t.Errorf("%s: %s gets %v (%v), want %q", c.podSubnet, host, got, ok, want)
			}
		}
	}
}
