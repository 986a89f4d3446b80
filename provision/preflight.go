package provision

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/charmbracelet/log"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/provision/ssh"
)

// PreflightOptions tune Preflight.
type PreflightOptions struct {
	// Parallel bounds hosts probed at once; 0 means ssh.DefaultParallel.
	Parallel int
	// Binaries maps a host to the binaries it needs (etcd on etcd hosts,
	// kubeadm, kubelet, kubectl on nodes) that no artifact provides: they
	// must be on the host already.
	Binaries map[string][]string
	// MaxClockSkew bounds a host's clock against the operator's; 0 means
	// DefaultMaxClockSkew.
	MaxClockSkew time.Duration
	// MinEtcdDiskFree is the free space the etcd data directory's file
	// system needs; 0 means DefaultMinEtcdDiskFree.
	MinEtcdDiskFree int64
	// MaxFsyncLatency bounds the mean synchronous 8 KiB write on the etcd data
	// directory's file system; 0 means DefaultMaxFsyncLatency.
	MaxFsyncLatency time.Duration
	// Now is the operator's clock; nil means time.Now.
	Now func() time.Time
	// Logger receives progress at debug level; nil discards.
	Logger *log.Logger
}

// Defaults for PreflightOptions.
const (
	// DefaultMaxClockSkew: etcd's leases and every certificate's validity
	// depend on clocks that agree; etcd warns at one second of skew.
	DefaultMaxClockSkew = 2 * time.Second
	// DefaultMinEtcdDiskFree is etcd's default backend quota (2 GiB) with
	// room for the WAL and snapshots.
	DefaultMinEtcdDiskFree = 4 << 30
	// DefaultMaxFsyncLatency is etcd's guidance: WAL fsyncs above 10 ms (p99)
	// make heartbeats late and leaders flap.
	DefaultMaxFsyncLatency = 10 * time.Millisecond
)

// Problem is one failed preflight check.
type Problem struct {
	Host    string `json:"host"`
	Check   string `json:"check"`
	Message string `json:"message"`
}

func (p Problem) String() string { return fmt.Sprintf("%s: %s: %s", p.Host, p.Check, p.Message) }

// PreflightError carries every problem found, so one run shows them all.
type PreflightError struct{ Problems []Problem }

func (e *PreflightError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "preflight found %d problem(s):", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  " + p.String())
	}
	return b.String()
}

// preflightProbe is what the preflight script reads on one host, besides
// what the facts already hold.
type preflightProbe struct {
	Listening  []int
	PortsKnown bool
	Clock      time.Time
	Sent, Got  time.Time // operator's clock around the probe, to allow for the round trip
	Binaries   map[string]bool
	DiskFree   int64 // bytes free on the etcd data directory's file system; -1 unknown
	Fsync      time.Duration
}

func parsePreflight(out []byte) (*preflightProbe, error) {
	p := &preflightProbe{Binaries: map[string]bool{}, DiskFree: -1}
	complete := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			return nil, fmt.Errorf("preflight output %q is not key=value", sc.Text())
		}
		switch {
		case key == "end":
			complete = true
		case key == "clock":
			ns, err := strconv.ParseInt(val, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("clock %q: %w", val, err)
			}
			p.Clock = time.Unix(0, ns)
		case key == "ports":
			p.PortsKnown = true
		case key == "listen":
			if n, err := strconv.Atoi(val); err == nil {
				p.Listening = append(p.Listening, n)
			}
		case strings.HasPrefix(key, "bin."):
			p.Binaries[strings.TrimPrefix(key, "bin.")] = val == "yes"
		case key == "disk_free_kib":
			if n, err := strconv.ParseInt(val, 10, 64); err == nil {
				p.DiskFree = n << 10
			}
		case key == "fsync_ns":
			if n, err := strconv.ParseInt(val, 10, 64); err == nil {
				p.Fsync = time.Duration(n)
			}
		default:
			return nil, fmt.Errorf("preflight output: unexpected key %q", key)
		}
	}
	if !complete {
		return nil, fmt.Errorf("preflight output ends before its end marker")
	}
	return p, nil
}

// Preflight checks, read-only and in parallel, everything that would make
// the apply fail halfway, and returns every problem at once: unreachable
// hosts, OS and architecture, duplicate hostnames, ports taken, clock skew,
// disk space and fsync latency for etcd, binaries missing. The error is
// only for Preflight itself failing (a cancelled context).
func Preflight(ctx context.Context, inv *inventory.Inventory, facts *plan.Facts, conn Connector, opts PreflightOptions) ([]Problem, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	logger := opts.Logger
	if logger == nil {
		logger = log.New(io.Discard)
	}
	external := inv.Topology.EtcdMode == inventory.EtcdExternal
	var names []string
	for _, h := range inv.Hosts {
		if hf := facts.Hosts[h.Name]; hf != nil && hf.Reachable {
			names = append(names, h.Name)
		}
	}
	results, _ := ssh.ForEach(ctx, names, opts.Parallel, func(ctx context.Context, name string) (*preflightProbe, error) {
		h := inv.Host(name)
		dataDir := ""
		if external && h.Has(inventory.RoleEtcd) {
			dataDir = inv.Etcd.DataDir
		}
		ex, err := conn.Connect(ctx, h)
		if err != nil {
			return nil, err
		}
		sent := opts.Now()
		res, err := runCapped(ctx, ex, ssh.Command{Cmd: "sh -s", Stdin: strings.NewReader(preflightScript(opts.Binaries[name], dataDir)), Timeout: DefaultProbeTimeout, MaxOutput: 64 << 10})
		got := opts.Now()
		if err != nil {
			return nil, fmt.Errorf("preflight probe: %w", err)
		}
		p, err := parsePreflight(res.Stdout)
		if err != nil {
			return nil, err
		}
		p.Sent, p.Got = sent, got
		return p, nil
	})
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("preflight: %w", err)
	}
	probes := map[string]*preflightProbe{}
	var problems []Problem
	for _, r := range results {
		if r.Err != nil {
			problems = append(problems, Problem{Host: r.Host, Check: "probe", Message: withoutHost(r.Host, r.Err)})
			continue
		}
		logger.Debug("preflight probed", "host", r.Host, "took", r.Duration.Round(time.Millisecond))
		probes[r.Host] = r.Value
	}
	return append(problems, checkPreflight(inv, facts, probes, opts)...), nil
}
