// Package lab runs local lab machines for kprov's demos and end-to-end tests.
//
// A lab machine is a systemd-nspawn container booting real systemd and sshd
// on an overlayfs copy of a shared Debian root filesystem, with its own
// network namespace, address, hostname and SSH host key. The host reaches the
// machines over a bridge; faults (stop, cut, netem) are applied from the host
// side so that a test can rehearse what happens to real machines.
//
// Everything the package makes on the host is recorded in a state file before
// it is made and is named after the lab, so Down can remove it even after a
// crash of the process that made it.
package lab
