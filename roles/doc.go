// Package roles decides what each role (master, etcd, infra, compute) needs
// on its host and renders it: the files kprov will push, byte for byte, and
// the node labels and taints the apply step settles after a node joins. It
// also plans: from the inventory and the facts it returns the stages that
// keep etcd and control-plane quorum at every step.
//
// Everything here is pure. It links no transport (a test checks that), so
// it can never talk to a host.
//
// Render is a pure function of the inventory, the PKI state and the loaded
// templates: no network, no clock, no file system. The same inputs give the
// same bytes, so a reviewer can diff `kprov render` output and the apply can
// compare checksums with what is on a host before it uploads anything.
package roles
