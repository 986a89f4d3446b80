package ssh

import (
	"context"
	"errors"
	"fmt"
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
