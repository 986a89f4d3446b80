package inventory_test

import (
	"strings"
	"testing"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/ssh"
)

// TestBastionHostAsTransportReadsIt checks that every bastion the inventory
// accepts is read by the SSH transport with the same host the inventory
// validated: a parser that split user@host:port differently would let an
// unchecked host through (as "a@b@host" once did).
func TestBastionHostAsTransportReadsIt(t *testing.T) {
	cases := map[string]string{
		"jump.example.internal":        "jump.example.internal",
		"ops@jump.example.internal:22": "jump.example.internal",
		"ops@[fe80::1%eth0]:2222":      "fe80::1%eth0",
		"[2001:db8::1]":                "2001:db8::1",
		"2001:db8::2":                  "2001:db8::2",
		"ops@192.0.2.1":                "192.0.2.1",
	}
	for bastion, host := range cases {
		src := `
cluster "t" { kubernetes_version = "1.37.2" }
ssh { bastion = "` + bastion + `" }
host "cp-1" {
  address = "192.0.2.10"
  roles   = ["master"]
}
`
		inv, diags := inventory.Parse([]byte(src), "t.hcl", inventory.Options{HomeDir: "/home/test", Environ: func() []string { return nil }})
		if diags.HasErrors() {
			t.Errorf("%s: %v", bastion, diags)
			continue
		}
		hop, err := ssh.ParseBastion(inv.SSH.Bastions[0])
		if err != nil {
			t.Errorf("%s: the inventory accepts it, the transport does not: %v", bastion, err)
			continue
		}
		if !strings.EqualFold(hop.Address, host) {
			t.Errorf("%s: the inventory checked host %q, the transport would dial %q", bastion, host, hop.Address)
		}
	}
}
