package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// Exit codes are part of the interface scripts rely on: 0 ok, 1 errors found, 2 usage.
func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.hcl")
	bad := filepath.Join(dir, "bad.hcl")
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(good, "cluster \"c\" { kubernetes_version = \"1.37.2\" }\nhost \"a\" {\n address = \"192.0.2.1\"\n roles = [\"master\"]\n}\n")
	write(bad, "cluster \"c\" { kubernetes_version = \"1.37.2\" }\nhost \"a\" {\n address = \"192.0.2.1\"\n roles = [\"worker\"]\n}\n")
	cases := []struct {
		args []string
		want int
	}{
		{[]string{"validate", "-f", good}, exitOK},
		{[]string{"validate", "-f", good, "--json"}, exitOK},
		{[]string{"validate", "-f", bad}, exitError},
		{[]string{"validate", "-f", bad, "--json"}, exitError},
		{[]string{"validate", "-f", filepath.Join(dir, "none.hcl")}, exitError},
		{[]string{"validate", "-f", good, "-var", "novalue"}, exitUsage},
		{[]string{"validate", "-f", good, "--bogus"}, exitUsage},
		{[]string{"validate", "-f", good, "extra"}, exitUsage},
		{[]string{"validate", "-f", good, "--log-level", "loud"}, exitUsage},
		{[]string{"nosuchcommand"}, exitUsage},
		{[]string{"init", "--topology", "nope", "-f", filepath.Join(dir, "x.hcl")}, exitUsage},
		{[]string{"init", "-f", good}, exitError},
	}
	for _, c := range cases {
		var out, errOut bytes.Buffer
		if got := run(c.args, &out, &errOut); got != c.want {
			t.Errorf("kprov %v: exit %d, want %d\nstdout: %s\nstderr: %s", c.args, got, c.want, out.String(), errOut.String())
		}
	}
}

func TestTerraformStyleVarFlag(t *testing.T) {
	got := terraformStyleFlags([]string{"validate", "-var", "a=b", "-var=c=d", "--", "-var"})
	want := []string{"validate", "--var", "a=b", "--var=c=d", "--", "-var"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}
