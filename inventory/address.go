package inventory

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// A host's address, a bastion's host and the control-plane endpoint's host
// end up in places that other programs parse: known_hosts lines, ssh's and
// the C library's resolvers, kubeadm's configuration and certificates. Each
// of those reads a stray newline, space or '%' differently, so kprov accepts
// only two shapes it can read exactly one way: an IP literal as Go's
// net/netip reads it, or an RFC 1123 DNS name that cannot be mistaken for a
// number. The SSH side re-checks what it writes; this is the first gate.

// zonePolicy says whether an IPv6 zone (fe80::1%eth0) is meaningful where an
// address is used.
type zonePolicy bool

const (
	// zoneAllowed: the operator's machine connects to the address, so a
	// link-local address needs the interface that reaches it.
	zoneAllowed zonePolicy = true
	// zoneRefused: every node uses the address (the control-plane endpoint),
	// and a zone names an interface of one machine only.
	zoneRefused zonePolicy = false
)

// interfaceName is what kprov accepts as an IPv6 zone: a Linux interface name
// (at most 15 bytes, IFNAMSIZ - 1) or a numeric interface index, made of the
// characters interface names use in practice. Linux itself allows more
// (anything but '/', ':' and whitespace), but nothing in a zone may ever
// reach a known_hosts line or a shell, so the set is kept small.
var interfaceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$`)

// inetAtonPart is one part of an IPv4 address in any of the forms inet_aton
// (and so getaddrinfo and ssh) accepts: decimal, octal with a leading zero,
// or hexadecimal with 0x.
var inetAtonPart = regexp.MustCompile(`^(0x[0-9a-f]*|[0-9]+)$`)

// checkHost checks the host part of an address: an IP literal (a zone only on
// a link-local IPv6 address, and only when policy allows one) or a DNS name.
// The error says what is wrong and what to write instead; it never repeats
// the value in a form a terminal would interpret.
func checkHost(s string, zones zonePolicy) error {
	if s == "" {
		return fmt.Errorf("the host is empty")
	}
	if err := checkPrintable(s); err != nil {
		return err
	}
	if strings.ContainsAny(s, ":%") {
		return checkIPv6Literal(s, zones)
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return nil // a dotted-decimal IPv4 address; netip refuses leading zeros
	}
	return checkDNSName(s)
}

// checkPrintable refuses whitespace, control characters and invalid UTF-8
// anywhere in s: a newline ends a known_hosts line, a space splits a host
// pattern list, and either can smuggle a second entry into a file.
func checkPrintable(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%q is not valid UTF-8", s)
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("%q contains whitespace or a control character (%U); remove it", s, r)
		}
	}
	return nil
}

func checkIPv6Literal(s string, zones zonePolicy) error {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() {
		return fmt.Errorf("%q is not an IP address (an IPv6 address is written like \"2001:db8::10\", a link-local one with its interface like \"fe80::10%%eth0\")", s)
	}
	zone := a.Zone()
	if zone == "" {
		return nil
	}
	switch {
	case zones == zoneRefused:
		return fmt.Errorf("%q has a zone (%%%s), which names an interface of one machine; every node uses this address, so give one without a zone", s, zone)
	case !a.IsLinkLocalUnicast():
		return fmt.Errorf("%q has a zone, but only a link-local address (fe80::/10) takes one; remove %%%s", s, zone)
	case !interfaceName.MatchString(zone):
		return fmt.Errorf("the zone of %q is not an interface name (up to 15 letters, digits, '_', '.' and '-', such as %%eth0)", s)
	}
	return nil
}

func checkDNSName(s string) error {
	name := strings.ToLower(s)
	if numericLooking(name) {
		return fmt.Errorf("%q looks like a number, but it is not an IPv4 address in dotted decimal: ssh and the C library would read it as some other IPv4 address (leading zeros as octal, 0x as hexadecimal, fewer than four parts as a packed number); write the address as four decimal numbers without leading zeros%s", s, dottedDecimalSuggestion(name))
	}
	if len(name) > 253 || !dns1123Subdomain.MatchString(name) {
		return fmt.Errorf("%q is neither an IP address nor a DNS name (letters, digits, '-' and '.', each label starting and ending with a letter or digit)", s)
	}
	for _, label := range strings.Split(name, ".") {
		if len(label) > 63 {
			return fmt.Errorf("%q is not a DNS name: the label %q is longer than 63 characters", s, label)
		}
	}
	return nil
}

// numericLooking reports whether a name would be read as a number rather than
// looked up: its last label is all digits (RFC 1123 2.1 and RFC 3696 2: no
// top-level domain is numeric), or it has one to four parts that inet_aton
// reads as numbers.
func numericLooking(name string) bool {
	labels := strings.Split(name, ".")
	last := labels[len(labels)-1]
	if last != "" && strings.Trim(last, "0123456789") == "" {
		return true
	}
	if len(labels) > 4 {
		return false
	}
	for _, l := range labels {
		if !inetAtonPart.MatchString(l) {
			return false
		}
	}
	return true
}

// dottedDecimalSuggestion returns ` (did you mean "192.0.2.11"?)` for four
// decimal parts with leading zeros, the most likely slip; "" otherwise.
func dottedDecimalSuggestion(name string) string {
	parts := strings.Split(name, ".")
	if len(parts) != 4 {
		return ""
	}
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 8)
		if err != nil {
			return ""
		}
		parts[i] = strconv.FormatUint(n, 10)
	}
	return fmt.Sprintf(` (did you mean %q?)`, strings.Join(parts, "."))
}

// addressKey is the form two addresses are compared in: an IPv4-mapped IPv6
// address is the IPv4 address it maps, and DNS names compare without case,
// as resolvers and OpenSSH compare them.
func addressKey(addr string) string {
	if a, err := netip.ParseAddr(addr); err == nil {
		return a.Unmap().String()
	}
	return strings.ToLower(addr)
}

// splitHostPort splits "host", "host:port", "[host]", "[host]:port" or a bare
// IPv6 address (which cannot carry a port), the way provision/ssh reads a
// jump host, so both sides agree on which part is the host. hasPort is true
// when a ':' introduced a port, even an empty one; the port is returned
// unchecked (see checkPort).
func splitHostPort(s string) (host, port string, hasPort bool, err error) {
	if rest, ok := strings.CutPrefix(s, "["); ok {
		host, after, ok := strings.Cut(rest, "]")
		if !ok {
			return "", "", false, fmt.Errorf("%q has '[' without ']'", s)
		}
		if after == "" {
			return host, "", false, nil
		}
		if port, ok := strings.CutPrefix(after, ":"); ok {
			return host, port, true, nil
		}
		return "", "", false, fmt.Errorf("%q has %q after ']'; write [host]:port", s, after)
	}
	if strings.Count(s, ":") == 1 {
		host, port, _ := strings.Cut(s, ":")
		return host, port, true, nil
	}
	return s, "", false, nil
}

// checkPort accepts decimal digits for a port from 1 to 65535.
func checkPort(port string) (int, error) {
	if port == "" || strings.Trim(port, "0123456789") != "" {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return p, nil
}

// validUser reports whether s can be an SSH login name: not empty, no
// whitespace or control characters, and none of the '@' and ':' that would
// make user@host:port ambiguous.
func validUser(s string) bool {
	return s != "" && checkPrintable(s) == nil && !strings.ContainsAny(s, "@:")
}
