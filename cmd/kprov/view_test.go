package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// Confirm refuses at once when nobody can answer (no terminal on stdin),
// with exit 2 and what to do; on a terminal only "yes" applies.
func TestConfirm(t *testing.T) {
	cases := []struct {
		terminal bool
		input    string
		code     int // 0: confirmed
		msg      string
	}{
		{false, "yes\n", exitUsage, "stdin is not a terminal, so nobody can confirm the plan above; nothing was changed: to apply it, run kprov apply --auto-approve"},
		{true, "yes\n", 0, ""},
		{true, " yes \n", 0, ""},
		{true, "y\n", exitError, "apply cancelled; nothing was changed"},
		{true, "", exitError, "apply cancelled; nothing was changed"},
	}
	for _, c := range cases {
		var out bytes.Buffer
		v := &textView{g: &globalOptions{stdout: &out}, stdin: strings.NewReader(c.input), stdinTerminal: c.terminal}
		err := v.Confirm(context.Background())
		var ce *exitCodeError
		switch {
		case c.code == 0 && err != nil:
			t.Errorf("terminal %v, %q: %v, want confirmed", c.terminal, c.input, err)
		case c.code != 0 && (!errors.As(err, &ce) || ce.code != c.code || !strings.Contains(err.Error(), c.msg)):
			t.Errorf("terminal %v, %q: %v, want exit %d with %q", c.terminal, c.input, err, c.code, c.msg)
		}
		if asked := strings.Contains(out.String(), "Apply?"); asked != c.terminal {
			t.Errorf("terminal %v: asked %v (%q)", c.terminal, asked, out.String())
		}
	}
}
