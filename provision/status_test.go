package provision

import (
	"strings"
	"testing"
)

// kprov status exits 0 only when every host answers and every etcd voter is
// healthy; each problem is named once.
func TestStatusProblems(t *testing.T) {
	up := func(name string) HostStatus { return HostStatus{Name: name, Reachable: true} }
	voter := func(name string, healthy bool) MemberStatus { return MemberStatus{Name: name, Healthy: healthy} }
	cases := []struct {
		name     string
		rep      StatusReport
		external bool
		want     string
	}{
		{"stacked, all up", StatusReport{Hosts: []HostStatus{up("cp-1"), up("w-1")}}, false, ""},
		{"a host down", StatusReport{Hosts: []HostStatus{up("cp-1"), {Name: "w-1", Error: "connection refused"}}}, false, "w-1 is unreachable"},
		{"external, all healthy", StatusReport{Hosts: []HostStatus{up("etcd-1")}, Etcd: []MemberStatus{voter("etcd-1", true), voter("etcd-2", true)}}, true, ""},
		{"a learner left is not a problem", StatusReport{Hosts: []HostStatus{up("etcd-1")},
			Etcd: []MemberStatus{voter("etcd-1", true), {Name: "etcd-2", Learner: true}}}, true, ""},
		{"a voter unhealthy, its host down", StatusReport{Hosts: []HostStatus{up("etcd-1"), {Name: "etcd-2"}},
			Etcd: []MemberStatus{voter("etcd-1", true), voter("etcd-2", false)}}, true, "etcd-2 is unreachable|etcd member etcd-2 is not healthy"},
		{"member list unreadable", StatusReport{Hosts: []HostStatus{up("etcd-1")}, EtcdError: "no member answers"}, true, "the etcd member list could not be read"},
		{"no members", StatusReport{Hosts: []HostStatus{up("etcd-1")}}, true, "etcd lists no members"},
		{"nodes Ready, one not joined yet", StatusReport{Hosts: []HostStatus{
			{Name: "cp-1", Reachable: true, Joined: true, ControlPlane: true, Node: NodeReady},
			{Name: "w-1", Reachable: true, Node: NodeNotRegistered}}}, false, ""},
		{"a joined node not Ready, another not registered", StatusReport{Hosts: []HostStatus{
			{Name: "cp-1", Reachable: true, Joined: true, Node: NodeNotReady},
			{Name: "w-1", Reachable: true, Joined: true, Node: NodeNotRegistered},
			{Name: "w-2", Reachable: true, Joined: true}}}, false,
			"node cp-1 is not Ready|node w-1 is joined but not registered with the API server"},
	}
	for _, c := range cases {
		if got := strings.Join(c.rep.problems(c.external), "|"); got != c.want {
			t.Errorf("%s: problems %q, want %q", c.name, got, c.want)
		}
	}
}
