package plan

import (
	"slices"
	"testing"
)

func TestFactsChanges(t *testing.T) {
	saved := func() *Facts {
		return &Facts{
			Hosts: map[string]*HostFacts{
				"etcd-1":    {Reachable: true, Hostname: "etcd-1", Files: map[string]string{"/etc/etcd/etcd.yaml": "aa"}, Services: map[string]string{"etcd.service": "active"}},
				"compute-1": {Reachable: true, Hostname: "compute-1"},
			},
			Etcd:            []EtcdMember{{ID: 1, Name: "etcd-1", Healthy: true}},
			EtcdSource:      EtcdSourceLive,
			EtcdDataPresent: map[string]bool{"etcd-1": true},
		}
	}
	for _, tc := range []struct {
		name   string
		change func(f *Facts)
		want   []string
	}{
		{"same", func(*Facts) {}, nil},
		{"file changed", func(f *Facts) { f.Hosts["etcd-1"].Files["/etc/etcd/etcd.yaml"] = "bb" }, []string{"etcd-1: file /etc/etcd/etcd.yaml"}},
		{"file appeared", func(f *Facts) { f.Hosts["compute-1"].Files = map[string]string{"/etc/x": "cc"} }, []string{"compute-1: file /etc/x"}},
		{"file removed", func(f *Facts) { delete(f.Hosts["etcd-1"].Files, "/etc/etcd/etcd.yaml") }, []string{"etcd-1: file /etc/etcd/etcd.yaml"}},
		{"host stopped", func(f *Facts) {
			f.Hosts["compute-1"] = &HostFacts{Error: "connect: timeout"}
		}, []string{"compute-1: reachable", "compute-1: connection error", "compute-1: hostname"}},
		{"service and member", func(f *Facts) {
			f.Hosts["etcd-1"].Services["etcd.service"] = "failed"
			f.Etcd[0].Healthy = false
		}, []string{"etcd-1: service etcd.service", "etcd members"}},
		{"runtime facts", func(f *Facts) {
			f.Hosts["compute-1"].Runtime = &RuntimeFacts{CgroupVersion: 1, SystemdInit: true, CapSysResource: true}
		}, []string{"compute-1: container runtime facts (cgroups, init, root file system, capabilities, CNI plugins)"}},
		{"host added", func(f *Facts) { f.Hosts["infra-1"] = &HostFacts{Reachable: true} }, []string{"infra-1: in only one of the two"}},
		{"cluster-wide", func(f *Facts) {
			f.EtcdDataPresent["etcd-2"] = true
			f.Nodes = map[string]*NodeFacts{"master-1": {}}
			f.KubeconfigFetched = true
		}, []string{"etcd data directories", "Kubernetes nodes", "admin kubeconfig in the state directory"}},
		{"images", func(f *Facts) {
			f.Hosts["compute-1"].Images = map[string]string{"registry.k8s.io/pause:3.10.2": "sha256:aa"}
			f.Hosts["etcd-1"].ImagesUnknown = "ctr not found"
			f.ImageArchives = []ImageArchive{{Path: "/images/pause.tar", SHA256: "bb", Images: []ImageRef{{Ref: "registry.k8s.io/pause:3.10.2", Digest: "sha256:aa"}}}}
		}, []string{"compute-1: image registry.k8s.io/pause:3.10.2", "etcd-1: container images readable", "image archives on the operator's machine"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := saved(), saved()
			tc.change(b)
			got := a.Changes(b)
			if !slices.Equal(got, tc.want) {
				t.Errorf("Changes = %q, want %q", got, tc.want)
			}
			if (a.Digest() == b.Digest()) != (len(got) == 0) {
				t.Errorf("digests equal %v, but %d changes", a.Digest() == b.Digest(), len(got))
			}
		})
	}
}
