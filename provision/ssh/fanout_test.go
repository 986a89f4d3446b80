package ssh

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestForEach(t *testing.T) {
	var running, peak atomic.Int32
	hosts := []string{"cp-1", "cp-2", "cp-3", "w-1", "w-2"}
	results, err := ForEach(context.Background(), hosts, 2, func(ctx context.Context, h string) (string, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		switch h {
		case "cp-2":
			return "", ErrSudo
		case "w-1":
			return "", &HostError{Host: h, Err: errors.New("upload /etc/x: disk full")}
		case "w-2":
			panic("boom")
		}
		return "ok " + h, nil
	})
	if peak.Load() > 2 {
		t.Errorf("%d hosts ran at once, limit 2", peak.Load())
	}
	if !errors.Is(err, ErrSudo) {
		t.Errorf("joined error lost the cause: %v", err)
	}
	lines := strings.Split(err.Error(), "\n")
	if !reflect.DeepEqual(lines, []string{"cp-2: passwordless sudo unavailable", "w-1: upload /etc/x: disk full", "w-2: panic: boom"}) {
		t.Errorf("joined error lines = %q", lines)
	}
	if results[0].Value != "ok cp-1" || results[2].Value != "ok cp-3" || results[1].Err == nil {
		t.Errorf("results = %+v", results)
	}
	var b strings.Builder
	n, _ := WriteFailures(&b, results)
	out := b.String()
	if n != 3 || !strings.Contains(out, "HOST") || !strings.Contains(out, "w-1") || strings.Contains(out, "cp-1 ") ||
		!strings.Contains(out, "3 of 5 hosts failed") || strings.Contains(out, "w-1: upload") {
		t.Errorf("failure table (%d):\n%s", n, out)
	}
}

func TestForEachCancelledSkipsHosts(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	called := 0
	_, err := ForEach(ctx, []string{"a", "b"}, 1, func(context.Context, string) (int, error) { called++; return 0, nil })
	if called != 0 || !errors.Is(err, context.Canceled) {
		t.Errorf("called %d, err %v", called, err)
	}
}

func TestParseBastions(t *testing.T) {
	hops, err := ParseBastions("ops@jump1:2200,[2001:db8::1]:22,jump3")
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("%s %s %d %s %d %s", hops[0].User, hops[0].Address, hops[0].Port, hops[1].Address, hops[1].Port, hops[2].Address)
	if got != "ops jump1 2200 2001:db8::1 22 jump3" {
		t.Errorf("got %s", got)
	}
	if _, err := ParseBastion("u@h:99999"); err == nil {
		t.Error("bad port accepted")
	}
}
