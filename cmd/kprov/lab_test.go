package main

import (
	"bytes"
	"strings"
	"testing"
)

// The lab commands need root and real machines; these cases are the ones
// rejected before anything is touched.
func TestLabUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"lab", "up", "--machines", "2", "--topology", "single"}, "not both"},
		{[]string{"lab", "up", "--topology", "mesh"}, "unknown topology"},
		{[]string{"lab", "up", "--machines", "0"}, "want 1 to 200"},
		{[]string{"lab", "up", "--name", "Bad_Name"}, "--name"},
		{[]string{"lab", "up", "--subnet", "nonsense"}, "--subnet"},
		{[]string{"lab", "netem", "node-1"}, "--delay"},
		{[]string{"lab", "netem", "node-1", "--clear", "--delay", "1ms"}, "--clear takes no"},
		{[]string{"lab", "netem", "node-1", "--loss", "lots"}, "--loss"},
		{[]string{"lab", "stop"}, "accepts 1 arg"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tc.args, &stdout, &stderr)
		if code != exitUsage || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("kprov %s: exit %d, stderr %q; want exit %d mentioning %q", strings.Join(tc.args, " "), code, stderr.String(), exitUsage, tc.want)
		}
	}
}

func TestLabStatusWithoutLab(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run([]string{"lab", "status", "--dir", t.TempDir()}, &stdout, &stderr)
	if code != exitError || !strings.Contains(stderr.String(), "run `kprov lab up` first") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
}
