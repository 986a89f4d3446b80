package shell

import (
	"os/exec"
	"testing"
)

// TestQuoteRoundTripsThroughSh runs the quoted words through a real sh and
// checks each arrives as the one argument it was.
func TestQuoteRoundTripsThroughSh(t *testing.T) {
	words := []string{"plain", "", "two words", "it's", `$(touch /tmp/x) ; rm -rf / "q" \n`, "line\nbreak", "'", "''"}
	for _, w := range words {
		out, err := exec.Command("sh", "-c", "printf %s "+Quote(w)).Output()
		if err != nil {
			t.Fatalf("%q: %v", w, err)
		}
		if string(out) != w {
			t.Errorf("sh read %q back as %q", w, out)
		}
	}
	if got := Join("a b", "c"); got != `'a b' 'c'` {
		t.Errorf("Join = %s", got)
	}
}
