package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/kprov/kprov/provision"
)

// A half-finished upgrade shows in kprov status as the versions the members
// run, lowest first, with what to do; one version (or none known) says nothing.
func TestMixedEtcdVersions(t *testing.T) {
	m := func(name, version string) provision.MemberStatus {
		return provision.MemberStatus{Name: name, Version: version}
	}
	for _, tc := range []struct {
		members []provision.MemberStatus
		want    string
	}{
		{[]provision.MemberStatus{m("etcd-1", "3.6.16"), m("etcd-2", "3.6.16"), m("etcd-3", "")}, ""},
		{nil, ""},
		{[]provision.MemberStatus{m("etcd-1", "3.6.9"), m("etcd-2", "3.6.16"), m("etcd-3", "3.6.9")},
			"members run different versions (3.6.9 on etcd-1, etcd-3; 3.6.16 on etcd-2): an upgrade is unfinished; run kprov apply to finish it"},
	} {
		if got := mixedEtcdVersions(tc.members); got != tc.want {
			t.Errorf("mixedEtcdVersions(%v) = %q, want %q", tc.members, got, tc.want)
		}
	}
}

// A member on no inventory host (a scale-in or replacement under way)
// is listed like the others, and named with what apply does about it.
func TestWriteStatusDeparting(t *testing.T) {
	var out bytes.Buffer
	writeStatus(&globalOptions{stdout: &out}, &provision.StatusReport{
		Quorum: "3 voting, quorum 2, 3 healthy",
		Etcd: []provision.MemberStatus{
			{ID: 1, Name: "etcd-1", PeerURL: "https://10.0.0.11:2380", Healthy: true, Leader: true, Version: "3.6.16"},
			{ID: 2, Name: "etcd-2", PeerURL: "https://10.0.0.12:2380", Healthy: true, Version: "3.6.16"},
			{ID: 3, Name: "etcd-9", PeerURL: "https://10.0.0.19:2380", Healthy: true, Version: "3.6.16", Departing: true},
		},
	})
	got := out.String()
	if !strings.Contains(got, "etcd: member etcd-9 (https://10.0.0.19:2380) is on no host of the inventory: kprov apply removes it") {
		t.Errorf("status does not name the departing member:\n%s", got)
	}
	if strings.Count(got, "is on no host of the inventory") != 1 {
		t.Errorf("status names members of the inventory as departing:\n%s", got)
	}
}
