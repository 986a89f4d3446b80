package lab

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/kprov/kprov/inventory"
)

// Default versions written into a lab's inventory.
const (
	DefaultKubernetesVersion = "1.37.2"
	DefaultEtcdVersion       = "3.6.16"
)

// File names inside a lab directory.
const (
	InventoryFile  = "lab.kprov.hcl"
	KnownHostsFile = "known_hosts"
	IdentityFile   = "id_ed25519"
)

// InventoryParams is what the rendered inventory needs besides the machines.
type InventoryParams struct {
	KubernetesVersion string
	EtcdVersion       string
	IdentityPath      string
	KnownHostsPath    string
	// Artifacts, when any, become the inventory's artifacts block, so kprov
	// pushes the binaries and images from the operator's cache as on an
	// air-gapped site; image archives (Artifact.Image) form its images list.
	Artifacts []Artifact
}

// RenderInventory writes the lab as a kprov inventory: one host block per
// machine, strict host key checking against the lab's known_hosts, and with
// more than one master the node-local API endpoint (the lab has no load
// balancer, and one master's address would not survive that master's loss).
func RenderInventory(s *State, p InventoryParams) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Written by `kprov lab up` for lab %q; `kprov lab down` removes it.\n\n", s.Name)
	fmt.Fprintf(&b, "cluster %s {\n", strconv.Quote(s.Name))
	fmt.Fprintf(&b, "  kubernetes_version = %s\n", strconv.Quote(p.KubernetesVersion))
	masters := 0
	for _, m := range s.Machines {
		if slices.Contains(m.Roles, inventory.RoleMaster) {
			masters++
		}
	}
	if masters > 1 {
		fmt.Fprintf(&b, "  # kprov-apiproxy on every node, to every master: the API survives the loss of any master.\n")
		fmt.Fprintf(&b, "  api_endpoint {\n    mode = %s\n  }\n", strconv.Quote(inventory.APIEndpointNodeLocal))
	}
	b.WriteString("}\n\n")
	b.WriteString("ssh {\n")
	fmt.Fprintf(&b, "  user            = %s\n", strconv.Quote("root"))
	fmt.Fprintf(&b, "  identity_file   = %s\n", strconv.Quote(p.IdentityPath))
	fmt.Fprintf(&b, "  known_hosts     = %s\n", strconv.Quote(p.KnownHostsPath))
	fmt.Fprintf(&b, "  host_key_policy = %s\n", strconv.Quote("strict"))
	b.WriteString("}\n\n")
	// Lab machines share the host's one disk with each other and with
	// whatever else the host runs (builds, tests), so a synchronous write
	// there is slower than on a member's own disk; etcd runs fine at this.
	fmt.Fprintf(&b, "etcd {\n  version           = %s\n  max_fsync_latency = \"50ms\" # machines share the host's disk\n}\n", strconv.Quote(p.EtcdVersion))
	var binaries, images []Artifact
	for _, a := range p.Artifacts {
		if a.Image {
			images = append(images, a)
		} else {
			binaries = append(binaries, a)
		}
	}
	if len(binaries)+len(images) > 0 {
		b.WriteString("\n# Pushed from the artifact cache (kprov lab artifacts); the hosts download nothing.\nartifacts {\n")
		width := 0
		for _, a := range binaries {
			width = max(width, len(a.Name))
		}
		if len(images) > 0 {
			width = max(width, len("images"))
		}
		for _, a := range binaries {
			fmt.Fprintf(&b, "  %-*s = { path = %s, sha256 = %s }\n", width, a.Name, strconv.Quote(a.Path), strconv.Quote(a.SHA256))
		}
		if len(images) > 0 {
			// Image archives, imported into containerd on every Kubernetes node.
			fmt.Fprintf(&b, "  %-*s = [\n", width, "images")
			for _, a := range images {
				fmt.Fprintf(&b, "    { path = %s, sha256 = %s }, # %s\n", strconv.Quote(a.Path), strconv.Quote(a.SHA256), a.Name)
			}
			b.WriteString("  ]\n")
		}
		b.WriteString("}\n")
	}
	for _, m := range s.Machines {
		roles := make([]string, len(m.Roles))
		for i, r := range m.Roles {
			roles[i] = strconv.Quote(string(r))
		}
		fmt.Fprintf(&b, "\nhost %s {\n", strconv.Quote(m.Name))
		fmt.Fprintf(&b, "  address = %s\n", strconv.Quote(m.Address.String()))
		fmt.Fprintf(&b, "  roles   = [%s]\n", strings.Join(roles, ", "))
		b.WriteString("}\n")
	}
	return b.Bytes()
}

// RenderKnownHosts pins each machine's address to its own host key.
func RenderKnownHosts(s *State) []byte {
	var b bytes.Buffer
	for _, m := range s.Machines {
		fmt.Fprintf(&b, "%s %s\n", m.Address, strings.TrimSpace(m.HostKey))
	}
	return b.Bytes()
}
