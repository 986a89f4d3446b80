package ssh

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// This file holds the rules for the host part of an address, which ends up
// in two places an attacker would like to reach: the dialer, and the
// known_hosts file that accept-new appends to. A known_hosts line is
// "PATTERNS KEYTYPE KEY": a newline in a host name starts a new line, a space
// starts the key, a comma starts another pattern, and '*', '?', '!', '|' and
// '#' are wildcards, negation, a hashed name and a comment. A host name that
// carried any of them could make every host trust an attacker's key, for
// kprov and for OpenSSH alike. So only two shapes are ever looked up or
// written: a plain host (an IP literal or an RFC 1123 DNS name) and
// [plain host]:port.

// canonicalHost returns the form of a host that known_hosts lookups and
// writes use. OpenSSH lower-cases the host name before it looks it up,
// records it or hashes it, so "LocalHost" and "localhost" are one host; kprov
// does the same, or an entry recorded for one spelling would not be seen for
// the other and accept-new would record a second key beside it. IP literals
// take their canonical text form (lower-case hex, shortest IPv6), the form
// the inventory already gives them. A zone is kept as written: interface
// names are case-sensitive.
func canonicalHost(h string) string {
	if a, err := netip.ParseAddr(h); err == nil {
		return a.String()
	}
	return strings.ToLower(h)
}

// checkPlainHost accepts an IP literal (with a zone only of interface-name
// characters) or an RFC 1123 DNS name, and nothing else. A name that looks
// numeric but is not an IP literal ("192.0.2.011", "3221225995") is refused:
// resolvers read such names as addresses in ways that differ between
// systems, and RFC 1123 rules out an all-numeric top-level label.
func checkPlainHost(h string) error {
	if h == "" {
		return fmt.Errorf("empty host")
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if z := a.Zone(); z != "" && !isInterfaceName(z) {
			return fmt.Errorf("%q: zone %q is not an interface name", h, z)
		}
		return nil
	}
	if len(h) > 253 {
		return fmt.Errorf("%q is longer than a DNS name may be (253 characters)", h)
	}
	labels := strings.Split(h, ".")
	for _, l := range labels {
		if !isDNSLabel(l) {
			return fmt.Errorf("%q is neither an IP address nor a DNS name (a DNS name has only letters, digits, '-' and '.')", h)
		}
	}
	if last := labels[len(labels)-1]; strings.Trim(last, "0123456789") == "" {
		return fmt.Errorf("%q looks like an IP address but is not one; write a plain IP address (192.0.2.11, no leading zeros) or a DNS name", h)
	}
	return nil
}

// isDNSLabel reports whether l is an RFC 1123 label: 1 to 63 letters,
// digits and hyphens, not starting or ending with a hyphen.
func isDNSLabel(l string) bool {
	if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// isInterfaceName reports whether z is made of the characters interface
// names use in practice (Linux allows more, but nothing kprov should pass on).
func isInterfaceName(z string) bool {
	if len(z) == 0 || len(z) > 15 {
		return false
	}
	for i := 0; i < len(z); i++ {
		c := z[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// checkKnownHostsPattern accepts exactly what kprov may write as the host
// field of a known_hosts line: a plain host (port 22) or [plain host]:port.
func checkKnownHostsPattern(p string) error {
	rest, bracketed := strings.CutPrefix(p, "[")
	if !bracketed {
		return checkPlainHost(p)
	}
	host, port, ok := strings.Cut(rest, "]:")
	if !ok {
		return fmt.Errorf("%q is not [host]:port", p)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return fmt.Errorf("%q: port %q is not a number from 1 to 65535", p, port)
	}
	return checkPlainHost(host)
}
