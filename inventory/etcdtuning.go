package inventory

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// etcd's limits on its tuning: it refuses to start with an election timeout
// under five heartbeats or above 50 s, and recommends a backend of at most
// 8 GiB (above it, defragmentation and snapshots take long enough to hurt).
const (
	etcdMaxElection    = 50 * time.Second
	etcdMinQuota       = 64 << 20
	etcdMaxQuota       = 100 << 30
	etcdAdvisedQuota   = 8 << 30
	etcdMaxHeartbeat   = 5 * time.Second
	etcdMinHeartbeat   = 10 * time.Millisecond
	etcdElectionFactor = 5
)

// buildEtcdTuning reads heartbeat_interval, election_timeout,
// quota_backend_bytes and snapshot_count into e, which holds the defaults.
func buildEtcdTuning(eb *etcdBlock, e *Etcd) hcl.Diagnostics {
	var diags hcl.Diagnostics
	ms := func(s *string, r hcl.Range, field string, lo, hi time.Duration) (time.Duration, bool) {
		d, err := time.ParseDuration(*s)
		switch {
		case err != nil:
			diags = append(diags, errorAt(r, "Invalid etcd "+field, "%q is not a duration: write it like \"100ms\" or \"1s\".", *s))
		case d%time.Millisecond != 0:
			diags = append(diags, errorAt(r, "Invalid etcd "+field, "%s is not a whole number of milliseconds, which is all etcd takes.", d))
		case d < lo || d > hi:
			diags = append(diags, errorAt(r, "Invalid etcd "+field, "%s is out of range: give %s to %s.", d, lo, hi))
		default:
			return d, true
		}
		return 0, false
	}
	heartbeatOK, electionOK := true, true
	if eb.HeartbeatInterval != nil {
		var d time.Duration
		if d, heartbeatOK = ms(eb.HeartbeatInterval, eb.HeartbeatIntervalRange, "heartbeat_interval", etcdMinHeartbeat, etcdMaxHeartbeat); heartbeatOK {
			e.HeartbeatInterval = d
		}
	}
	if eb.ElectionTimeout != nil {
		var d time.Duration
		if d, electionOK = ms(eb.ElectionTimeout, eb.ElectionTimeoutRange, "election_timeout", etcdElectionFactor*etcdMinHeartbeat, etcdMaxElection); electionOK {
			e.ElectionTimeout = d
		}
	}
	if heartbeatOK && electionOK {
		at := eb.ElectionTimeoutRange
		if eb.ElectionTimeout == nil {
			at = eb.HeartbeatIntervalRange
		}
		switch {
		case e.ElectionTimeout < etcdElectionFactor*e.HeartbeatInterval:
			diags = append(diags, errorAt(at, "etcd election_timeout too short",
				"election_timeout %s is under 5 heartbeats (heartbeat_interval %s), and etcd refuses to start with it; etcd's guidance is about 10 heartbeats: set election_timeout to %s.",
				e.ElectionTimeout, e.HeartbeatInterval, 10*e.HeartbeatInterval))
		case e.ElectionTimeout < 10*e.HeartbeatInterval:
			diags = append(diags, warningAt(at, "etcd election_timeout under 10 heartbeats",
				"election_timeout %s is %.1f heartbeats (heartbeat_interval %s); etcd's guidance is about 10, or a late heartbeat or two starts an election.",
				e.ElectionTimeout, float64(e.ElectionTimeout)/float64(e.HeartbeatInterval), e.HeartbeatInterval))
		}
	}
	if eb.QuotaBackendBytes != nil {
		n, err := parseBytes(*eb.QuotaBackendBytes)
		switch {
		case err != nil:
			diags = append(diags, errorAt(eb.QuotaBackendBytesRange, "Invalid etcd quota_backend_bytes", "%v: write it like \"8GiB\", \"512MiB\" or a number of bytes.", err))
		case n < etcdMinQuota || n > etcdMaxQuota:
			diags = append(diags, errorAt(eb.QuotaBackendBytesRange, "Invalid etcd quota_backend_bytes", "%s is out of range: give 64MiB to 100GiB.", *eb.QuotaBackendBytes))
		default:
			e.QuotaBackendBytes = n
			if n > etcdAdvisedQuota {
				diags = append(diags, warningAt(eb.QuotaBackendBytesRange, "etcd quota_backend_bytes above 8GiB",
					"etcd recommends at most 8GiB: above it, snapshots, defragmentation and a new member's catch-up take long enough to hurt."))
			}
		}
	}
	if eb.SnapshotCount != nil {
		if n := *eb.SnapshotCount; n < 100 || n > 10_000_000 {
			diags = append(diags, errorAt(eb.SnapshotCountRange, "Invalid etcd snapshot_count", "%d is out of range: give 100 to 10000000 (etcd's default is 10000).", n))
		} else {
			e.SnapshotCount = n
		}
	}
	return diags
}

// parseBytes reads a size: a number of bytes, or a number with one of the
// units KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, TB (powers of
// 1000).
func parseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		factor int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	factor := int64(1)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(t, u.suffix); ok {
			t, factor = strings.TrimSpace(rest), u.factor
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	if n > (1<<62)/factor {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * factor, nil
}
