package main

import (
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
