package lab

import (
	"fmt"
	"slices"

	"github.com/kprov/kprov/inventory"
)

// Topologies lists the named layouts `lab up --topology` accepts.
var Topologies = []string{"single", "ha-stacked", "ha-external", "openshift"}

// MachineSpec is one machine a lab is asked to have, before it has an address.
type MachineSpec struct {
	Name  string
	Roles []inventory.Role
}

// TopologyMachines returns the machines of a named topology.
func TopologyMachines(topology string) ([]MachineSpec, error) {
	switch topology {
	case "single":
		return group(nil, "master", 1, inventory.RoleMaster), nil
	case "ha-stacked":
		m := group(nil, "master", 3, inventory.RoleMaster)
		return group(m, "compute", 1, inventory.RoleCompute), nil
	case "ha-external":
		// Three etcd members: voting members must be odd so that one failure leaves a majority.
		m := group(nil, "etcd", 3, inventory.RoleEtcd)
		m = group(m, "master", 2, inventory.RoleMaster)
		m = group(m, "infra", 1, inventory.RoleInfra)
		return group(m, "compute", 1, inventory.RoleCompute), nil
	case "openshift":
		m := group(nil, "master", 3, inventory.RoleMaster)
		m = group(m, "infra", 3, inventory.RoleInfra)
		return group(m, "compute", 2, inventory.RoleCompute), nil
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
		role := inventory.RoleCompute
		if i < masters {
			role = inventory.RoleMaster
		}
		specs[i] = MachineSpec{Name: fmt.Sprintf("node-%d", i+1), Roles: []inventory.Role{role}}
	}
	return specs, nil
}

func group(specs []MachineSpec, prefix string, n int, roles ...inventory.Role) []MachineSpec {
	for i := 1; i <= n; i++ {
		specs = append(specs, MachineSpec{Name: fmt.Sprintf("%s-%d", prefix, i), Roles: slices.Clone(roles)})
	}
	return specs
}
