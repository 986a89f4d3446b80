package lab

import (
	"fmt"
	"slices"
)

// Roles a lab machine can carry in the inventory; they are kprov's host roles.
const (
	RoleMaster  = "master"
	RoleEtcd    = "etcd"
	RoleInfra   = "infra"
	RoleCompute = "compute"
)

// Topologies lists the named layouts `lab up --topology` accepts.
var Topologies = []string{"single", "ha-stacked", "ha-external", "openshift"}

// MachineSpec is one machine a lab is asked to have, before it has an address.
type MachineSpec struct {
	Name  string
	Roles []string
}

// TopologyMachines returns the machines of a named topology.
func TopologyMachines(topology string) ([]MachineSpec, error) {
	switch topology {
	case "single":
		return group(nil, "master", 1, RoleMaster), nil
	case "ha-stacked":
		m := group(nil, "master", 3, RoleMaster)
		return group(m, "compute", 1, RoleCompute), nil
	case "ha-external":
		// Three etcd members: voting members must be odd so that one failure leaves a majority.
		m := group(nil, "etcd", 3, RoleEtcd)
		m = group(m, "master", 2, RoleMaster)
		m = group(m, "infra", 1, RoleInfra)
		return group(m, "compute", 1, RoleCompute), nil
	case "openshift":
		m := group(nil, "master", 3, RoleMaster)
		m = group(m, "infra", 3, RoleInfra)
		return group(m, "compute", 2, RoleCompute), nil
	}
	return nil, fmt.Errorf("unknown topology %q (want one of %v)", topology, Topologies)
}

// CountMachines returns n machines node-1..node-n: the first three are masters
// with stacked etcd when n >= 3 (an odd member count), else the first one is;
// the rest are compute nodes.
func CountMachines(n int) ([]MachineSpec, error) {
	if n < 1 || n > MaxMachines {
		return nil, fmt.Errorf("%d machines: want 1 to %d", n, MaxMachines)
	}
	masters := 1
	if n >= 3 {
		masters = 3
	}
	specs := make([]MachineSpec, n)
	for i := range specs {
		role := RoleCompute
		if i < masters {
			role = RoleMaster
		}
		specs[i] = MachineSpec{Name: fmt.Sprintf("node-%d", i+1), Roles: []string{role}}
	}
	return specs, nil
}

func group(specs []MachineSpec, prefix string, n int, roles ...string) []MachineSpec {
	for i := 1; i <= n; i++ {
		specs = append(specs, MachineSpec{Name: fmt.Sprintf("%s-%d", prefix, i), Roles: slices.Clone(roles)})
	}
	return specs
}
