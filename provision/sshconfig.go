package provision

import (
	"cmp"
	"fmt"
	"os"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/ssh"
)

// The wait before a connection retry, doubled after each (capped at 30 s);
// the number of attempts is the inventory's connect_attempts (default 2: a
// refusing host is reported within about a second). A host-key problem and
// an attempt that waited its whole connect_timeout are never retried (see
// provision/ssh).
const DefaultSSHRetryBackoff = time.Second

// SSHConfig maps a host's effective ssh settings (the inventory's ssh block
// merged with the host's own) onto the transport's configuration.
//
// What the inventory leaves unset stays unset here (an empty user, port 0, no
// identity file, no bastion), so that the transport can fill it from
// ~/.ssh/config before its own defaults (root, 22) apply; what the inventory
// sets, including the address, always wins over ~/.ssh/config.
//
// Trust settings are spelled out on every hop rather than left to the
// transport's defaults, so that what this returns is exactly what will be
// checked: the inventory's known_hosts file first (accept-new records keys
// there), then ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts as OpenSSH
// reads them; the inventory's host key policy; a pinned host key for the host
// itself only (never for its bastions, whose keys are different machines').
//
// inventory.Load already merges the inventory's ssh block into every host;
// fields a host still leaves zero (an Inventory built in code) are taken from
// inv.SSH, so both paths connect the same way.
func SSHConfig(inv *inventory.Inventory, h *inventory.Host) (ssh.Config, error) {
	s := h.SSH
	if inv != nil {
		s = mergeSSH(inv.SSH, s)
	}
	// A missing home only loses the user's known_hosts file, which strict
	// checking then reports as an unknown host: never a weaker check.
	home, _ := os.UserHomeDir()
	knownHosts := uniqueStrings(ssh.DefaultKnownHostsFiles(s.KnownHosts, home))
	var identities []string
	if s.IdentityFile != "" {
		identities = []string{s.IdentityFile}
	}
	cfg := ssh.Config{
		Host:            h.Name,
		Address:         h.Address,
		Port:            s.Port,
		User:            s.User,
		IdentityFiles:   identities,
		KnownHostsFiles: knownHosts,
		HostKeyPolicy:   ssh.HostKeyPolicy(s.HostKeyPolicy),
		HostKey:         h.HostKey,
		ConnectTimeout:  s.ConnectTimeout,
		Attempts:        cmp.Or(s.ConnectAttempts, inventory.DefaultConnectAttempts),
		RetryBackoff:    DefaultSSHRetryBackoff,
	}
	for _, b := range s.Bastions {
		hop, err := ssh.ParseBastion(b)
		if err != nil {
			return ssh.Config{}, &ssh.HostError{Host: h.Name, Err: err}
		}
		// A hop without user@ or :port keeps them empty so ~/.ssh/config can
		// still supply them; everything about trust and patience is the
		// inventory's.
		hop.IdentityFiles = identities
		hop.KnownHostsFiles = knownHosts
		hop.HostKeyPolicy = cfg.HostKeyPolicy
		hop.ConnectTimeout = cfg.ConnectTimeout
		hop.Attempts = cfg.Attempts
		hop.RetryBackoff = cfg.RetryBackoff
		cfg.Bastions = append(cfg.Bastions, hop)
	}
	switch cfg.HostKeyPolicy {
	case "", ssh.PolicyStrict, ssh.PolicyAcceptNew:
	default:
		// inventory.Load rejects these; an Inventory built by hand must not
		// reach the transport with a policy it would read as something else.
		return ssh.Config{}, &ssh.HostError{Host: h.Name, Err: fmt.Errorf("host_key_policy %q: want %q or %q",
			s.HostKeyPolicy, ssh.PolicyStrict, ssh.PolicyAcceptNew)}
	}
	return cfg, nil
}

// mergeSSH fills the zero fields of host from defaults.
func mergeSSH(defaults, host inventory.SSHConfig) inventory.SSHConfig {
	if host.User == "" {
		host.User = defaults.User
	}
	if host.Port == 0 {
		host.Port = defaults.Port
	}
	if host.IdentityFile == "" {
		host.IdentityFile = defaults.IdentityFile
	}
	if host.KnownHosts == "" {
		host.KnownHosts = defaults.KnownHosts
	}
	if host.HostKeyPolicy == "" {
		host.HostKeyPolicy = defaults.HostKeyPolicy
	}
	if host.Bastions == nil {
		host.Bastions = defaults.Bastions
	}
	if host.ConnectTimeout == 0 {
		host.ConnectTimeout = defaults.ConnectTimeout
	}
	if host.ConnectAttempts == 0 {
		host.ConnectAttempts = defaults.ConnectAttempts
	}
	return host
}

// uniqueStrings drops repeats, keeping the first of each: the inventory's
// known_hosts is ~/.ssh/known_hosts by default, and reading it twice would
// report each of its keys twice in a mismatch.
func uniqueStrings(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
