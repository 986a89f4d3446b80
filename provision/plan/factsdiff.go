package plan

import (
	"encoding/json"
	"maps"
	"slices"
)

// Changes says where the facts to differ from f, for a person deciding
// whether a saved plan is still the one they reviewed: per host the files,
// services and versions that differ and any other changed fact, then the
// cluster-wide facts. It is empty when both have the same Digest.
func (f *Facts) Changes(to *Facts) []string {
	var out []string
	hosts := slices.Sorted(maps.Keys(f.Hosts))
	for h := range to.Hosts {
		if _, ok := f.Hosts[h]; !ok {
			hosts = append(hosts, h)
		}
	}
	slices.Sort(hosts)
	for _, h := range hosts {
		a, b := f.Hosts[h], to.Hosts[h]
		if a == nil || b == nil {
			out = append(out, h+": in only one of the two")
			continue
		}
		out = append(out, hostChanges(h, a, b)...)
	}
	if !sameJSON(f.Etcd, to.Etcd) || f.EtcdSource != to.EtcdSource {
		out = append(out, "etcd members")
	}
	if !maps.Equal(f.EtcdDataPresent, to.EtcdDataPresent) {
		out = append(out, "etcd data directories")
	}
	if !sameJSON(f.Nodes, to.Nodes) {
		out = append(out, "Kubernetes nodes")
	}
	if f.KubeconfigFetched != to.KubeconfigFetched {
		out = append(out, "admin kubeconfig in the state directory")
	}
	if !sameJSON(f.ImageArchives, to.ImageArchives) {
		out = append(out, "image archives on the operator's machine")
	}
	if f.Offline != to.Offline {
		out = append(out, "offline facts")
	}
	return out
}

// hostChanges lists what differs on one host.
func hostChanges(h string, a, b *HostFacts) []string {
	var out []string
	add := func(what string) { out = append(out, h+": "+what) }
	for _, c := range []struct {
		what    string
		changed bool
	}{
		{"reachable", a.Reachable != b.Reachable},
		{"connection error", a.Error != b.Error},
		{"hostname", a.Hostname != b.Hostname},
		{"OS", a.OS != b.OS},
		{"architecture", a.Arch != b.Arch},
		{"swap", a.SwapOn != b.SwapOn},
		{"kubelet joined", a.Joined != b.Joined},
		{"control plane", a.ControlPlane != b.ControlPlane},
		{"container images readable", a.ImagesUnknown != b.ImagesUnknown},
		{"container runtime facts (cgroups, init, root file system, capabilities, CNI plugins)", !sameJSON(a.RuntimeFacts(), b.RuntimeFacts())},
	} {
		if c.changed {
			add(c.what)
		}
	}
	for _, p := range changedKeys(a.Files, b.Files) {
		add("file " + p)
	}
	for _, u := range changedKeys(a.Services, b.Services) {
		add("service " + u)
	}
	for _, v := range changedKeys(a.Versions, b.Versions) {
		add("version of " + v)
	}
	for _, r := range changedKeys(a.Images, b.Images) {
		add("image " + r)
	}
	return out
}

// changedKeys are the keys whose values differ, or that only one map has, sorted.
func changedKeys(a, b map[string]string) []string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			out = append(out, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// sameJSON compares values the way Digest sees them.
func sameJSON(a, b any) bool {
	x, errX := json.Marshal(a)
	y, errY := json.Marshal(b)
	return errX == nil && errY == nil && string(x) == string(y)
}
