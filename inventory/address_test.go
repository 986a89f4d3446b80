package inventory

import (
	"strings"
	"testing"
)

// TestHostRules covers each shape checkHost accepts and each it refuses, for
// addresses and bastions (zones allowed) and the endpoint (zones refused).
func TestHostRules(t *testing.T) {
	valid := []string{
		"192.0.2.11", "2001:db8::1", "::ffff:192.0.2.11", "fe80::1%eth0", "fe80::1%2", "fe80::1%br-lan.10",
		"localhost", "node-1.example.internal", "1e100.net", "0xdead.example", "a.b-c.d9",
		strings.Repeat("a", 63) + ".example",
	}
	invalid := map[string]string{
		"":                                   "empty",
		"fe80::1%lo\n* ssh-ed25519 AAAA":     "whitespace or a control character (U+000A)",
		"fe80::1%eth0 *":                     "whitespace",
		"node\t1":                            "whitespace",
		"\u00a0node":                         "whitespace",
		"node\x7f":                           "control character",
		"node\xff":                           "not valid UTF-8",
		"::1%lo":                             "only a link-local address",
		"2001:db8::1%eth0":                   "only a link-local address",
		"fe80::1%eth0,*":                     "not an interface name",
		"fe80::1%eth0/x":                     "not an interface name",
		"fe80::1%0123456789abcdef":           "not an interface name",
		"fe80::1%":                           "not an IP address",
		"192.0.2.1%eth0":                     "not an IP address",
		"[::1]":                              "not an IP address",
		"::1:":                               "not an IP address",
		"192.0.2.011":                        `did you mean "192.0.2.11"?`,
		"3221225995":                         "looks like a number",
		"0x7f.1":                             "looks like a number",
		"0x7f000001":                         "looks like a number",
		"0X7F.0.0.1":                         "looks like a number",
		"127.1":                              "looks like a number",
		"node.123":                           "looks like a number",
		"node_1.example":                     "neither an IP address nor a DNS name",
		"-node.example":                      "neither an IP address nor a DNS name",
		"node..example":                      "neither an IP address nor a DNS name",
		"node.example.":                      "neither an IP address nor a DNS name",
		strings.Repeat("a", 64) + ".example": "longer than 63",
		strings.Repeat("a.", 127) + "ab":     "neither an IP address nor a DNS name",
	}
	checkTable(t, "checkHost", func(s string) error { return checkHost(s, zoneAllowed) }, valid, invalid)
	if err := checkHost("fe80::1%eth0", zoneRefused); err == nil || !strings.Contains(err.Error(), "every node uses this address") {
		t.Errorf("a zone where every node uses the address: %v", err)
	}
}

func TestAddressKey(t *testing.T) {
	same := [][2]string{
		{"::ffff:192.0.2.11", "192.0.2.11"},
		{"Node-1.Example.Internal", "node-1.example.internal"},
		{"2001:DB8::1", "2001:db8::1"},
	}
	for _, c := range same {
		if addressKey(c[0]) != addressKey(c[1]) {
			t.Errorf("%s and %s should be the same address", c[0], c[1])
		}
	}
	if addressKey("fe80::1%eth0") == addressKey("fe80::1%eth1") {
		t.Error("one link-local address on two links is two hosts")
	}
}

func TestJumpHostRules(t *testing.T) {
	valid := []string{"jump", "ops@jump.example:22", "[fe80::1%eth0]:2222", "[2001:db8::1]", "2001:db8::2", "ops@192.0.2.1"}
	invalid := map[string]string{
		"ops@evil@jump":         "more than one '@'",
		"@jump":                 "empty user",
		"op s@jump":             "must not contain whitespace",
		"jump:":                 `port ""`,
		"jump:0":                `port "0"`,
		"jump:65536":            `port "65536"`,
		"jump:+22":              `port "+22"`,
		"[::1":                  "'[' without ']'",
		"[::1]x":                `"x" after ']'`,
		"[::1]:22:":             `port "22:"`,
		":22":                   "no host",
		"jump\n* ssh-ed25519 A": "whitespace or a control character",
		"ops@192.0.2.011":       "looks like a number",
	}
	checkTable(t, "checkJumpHost", checkJumpHost, valid, invalid)
}

func TestEndpointRules(t *testing.T) {
	valid := map[string]string{
		"api.example.internal":      "api.example.internal:6443",
		"api.example.internal:8443": "api.example.internal:8443",
		"192.0.2.10":                "192.0.2.10:6443",
		"[2001:db8::10]:6443":       "[2001:db8::10]:6443",
		"[2001:db8::10]":            "[2001:db8::10]:6443",
		"2001:db8::10":              "[2001:db8::10]:6443",
	}
	for in, want := range valid {
		if got, err := parseEndpoint(in); err != nil || got != want {
			t.Errorf("parseEndpoint(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"[fe80::1%eth0]:6443", "api.example.internal:", "api.example.internal:x", "192.0.2.010:6443", ":6443", "api\n* ssh-ed25519 A:6443"} {
		if got, err := parseEndpoint(in); err == nil {
			t.Errorf("parseEndpoint(%q) = %q, want an error", in, got)
		}
	}
}

// checkTable runs check over values it must accept and values it must refuse
// with an error containing the given text.
func checkTable(t *testing.T, name string, check func(string) error, valid []string, invalid map[string]string) {
	t.Helper()
	for _, s := range valid {
		if err := check(s); err != nil {
			t.Errorf("%s(%q) = %v, want nil", name, s, err)
		}
	}
	for s, want := range invalid {
		if err := check(s); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s(%q) = %v, want an error containing %q", name, s, err, want)
		}
	}
}
