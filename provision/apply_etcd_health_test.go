package provision

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDownWatch: the members the stage started and cluster-wide problems never
// stop a health wait early; another voter does once it has been unhealthy
// for the whole grace period without a break, and a healthy poll in
// between starts its count again.
func TestDownWatch(t *testing.T) {
	t0 := time.Unix(1000, 0)
	w := &downWatch{starting: []string{"etcd-1"}, grace: time.Minute}
	p := func(members ...string) healthProblems {
		var out healthProblems
		for _, m := range members {
			out = append(out, healthProblem{member: m, text: m + " does not answer"})
		}
		return out
	}
	steps := []struct {
		at       time.Duration
		problems healthProblems
		want     []string
	}{
		{0, p("etcd-1", "etcd-2", ""), nil},
		{30 * time.Second, p("etcd-1", "etcd-2"), nil},
		{59 * time.Second, p("etcd-2", "etcd-3"), nil},
		{60 * time.Second, p("etcd-2", "etcd-3"), []string{"etcd-2"}},
		{61 * time.Second, p("etcd-3"), nil},                         // etcd-2 answered: its count starts again
		{2 * time.Minute, p("etcd-2", "etcd-3"), []string{"etcd-3"}}, // etcd-3 since 59 s
		{10 * time.Minute, p("etcd-1", ""), nil},                     // only the starting member: wait on
		{11 * time.Minute, p("etcd-3", "etcd-2"), nil},               // both start again
		{12 * time.Minute, p("etcd-3", "etcd-2"), []string{"etcd-2", "etcd-3"}},
	}
	for _, s := range steps {
		if got := w.observe(t0.Add(s.at), s.problems); !slices.Equal(got, s.want) {
			t.Errorf("at %s with %v: down %v, want %v", s.at, s.problems, got, s.want)
		}
	}
}

// TestOthersDownSays: the error names the member, its problem, that
// nothing else was restarted, and what to do.
func TestOthersDownSays(t *testing.T) {
	err := othersDown([]string{"etcd-2"}, time.Minute, healthProblems{
		{member: "etcd-1", text: "etcd-1 is still a learner"},
		{member: "etcd-2", text: "etcd-2 does not answer: connection refused"},
	})
	msg := err.Error()
	for _, want := range []string{"etcd member etcd-2 not healthy for 1m0s (etcd-2 does not answer: connection refused)", "restarted nothing else", "bring etcd-2 back", "run kprov apply again"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "learner") {
		t.Errorf("%q names the step's own member's problem", msg)
	}
}
