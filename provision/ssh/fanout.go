package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sync/errgroup"
)

// DefaultParallel bounds concurrent hosts when --parallel is not given: enough
// to hide network latency, few enough for a laptop's CPU (SSH handshakes and
// encryption) and for a bastion's MaxStartups (10 unauthenticated by default).
const DefaultParallel = 10

// HostResult is one host's outcome of a fan-out.
type HostResult[T any] struct {
	Host     string
	Value    T
	Err      error // prefixed with the host name
	Duration time.Duration
}

// ForEach runs fn for every host with at most parallel running at once (0 or
// less means DefaultParallel). Every host runs even when others fail; results
// come back in the order of hosts, and the error joins each failed host's
// error (prefixed with its name) so errors.Is still sees the causes.
// Cancelling ctx stops hosts that have not started; they fail with ctx's error.
func ForEach[T any](ctx context.Context, hosts []string, parallel int, fn func(ctx context.Context, host string) (T, error)) ([]HostResult[T], error) {
	if parallel <= 0 {
		parallel = DefaultParallel
	}
	results := make([]HostResult[T], len(hosts))
	var g errgroup.Group
	g.SetLimit(parallel)
	for i, h := range hosts {
		results[i].Host = h
		if err := ctx.Err(); err != nil {
			results[i].Err = hostErr(h, err)
			continue
		}
		g.Go(func() error {
			start := time.Now()
			v, err := func() (v T, err error) {
				// A panic in one host's step must not take the other hosts'
				// goroutines (and their half-done work) down with it.
				defer func() {
					if r := recover(); r != nil {
						err = fmt.Errorf("panic: %v", r)
					}
				}()
				if err := ctx.Err(); err != nil {
					return v, err
				}
				return fn(ctx, h)
			}()
			results[i] = HostResult[T]{Host: h, Value: v, Err: hostErr(h, err), Duration: time.Since(start)}
			return nil
		})
	}
	_ = g.Wait()
	var errs []error
	for _, r := range results {
		if r.Err != nil {
			errs = append(errs, r.Err)
		}
	}
	return results, errors.Join(errs...)
}

// WriteFailures writes a table of the hosts that failed (host, time taken,
// first line of the error) and returns how many failed; nothing is written
// when all succeeded.
func WriteFailures[T any](w io.Writer, results []HostResult[T]) (int, error) {
	var failed []HostResult[T]
	for _, r := range results {
		if r.Err != nil {
			failed = append(failed, r)
		}
	}
	if len(failed) == 0 {
		return 0, nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "HOST\tTOOK\tERROR\n")
	for _, r := range failed {
		msg := r.Err.Error()
		// The table already has a host column.
		msg = strings.TrimPrefix(msg, r.Host+": ")
		if first, _, ok := strings.Cut(msg, "\n"); ok {
			msg = first + " …"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Host, r.Duration.Round(time.Millisecond), msg)
	}
	fmt.Fprintf(tw, "%d of %d hosts failed\n", len(failed), len(results))
	return len(failed), tw.Flush()
}
