package lab

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
)

// MaxMachines bounds a lab's size: addresses .11 to .210 of its /24.
const MaxMachines = 200

// namePattern keeps lab and machine names valid as hostnames, file names and
// parts of network namespace names.
var namePattern = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}[a-z0-9]$`)

// ValidName reports why name cannot name a lab or a machine, or nil.
func ValidName(name string) error {
	if !namePattern.MatchString(name) || strings.Contains(name, "--") {
		return fmt.Errorf("name %q: want 2 to 32 lowercase letters, digits and single dashes, starting with a letter", name)
	}
	return nil
}

// labID is a short, stable tag for the lab's network links. Linux limits
// interface names to 15 characters, too short for the lab name itself, so
// links are named kp<id>... and found again after a crash by that prefix.
func labID(lab string) string {
	sum := sha256.Sum256([]byte(lab))
	return hex.EncodeToString(sum[:])[:6]
}

// linkPrefix is what every host network link of the lab starts with.
func linkPrefix(lab string) string { return "kp" + labID(lab) }

// bridgeName is the host bridge joining the lab's machines (10 characters).
func bridgeName(lab string) string { return linkPrefix(lab) + "br" }

// hostVethName is the host end of machine index's veth pair (at most 11 characters).
func hostVethName(lab string, index int) string {
	return fmt.Sprintf("%sh%d", linkPrefix(lab), index)
}

// peerVethName is the machine end of the veth pair until it moves into the
// machine's namespace and is renamed eth0.
func peerVethName(lab string, index int) string {
	return fmt.Sprintf("%sp%d", linkPrefix(lab), index)
}

// netnsPrefix is what every network namespace of the lab starts with. The
// dot cannot occur in names, so lab "a" never claims lab "a-b"'s namespaces.
func netnsPrefix(lab string) string { return "kprov-" + lab + "." }

// netnsName is the named network namespace (/run/netns/NAME) of one machine.
func netnsName(lab, machine string) string { return netnsPrefix(lab) + machine }
