package provision

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
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
		res, err := ex.Run(ctx, ssh.Command{Cmd: "sh -s", Stdin: strings.NewReader(preflightScript(opts.Binaries[name], dataDir)), Timeout: DefaultProbeTimeout})
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

// supportedOS and supportedArch are what kprov's templates and the
// artifacts are made for.
var (
	supportedOS   = []string{"debian", "ubuntu"}
	supportedArch = []string{"x86_64", "aarch64"}
)

// checkPreflight judges the facts and probes; it is pure, so each rule has a
// table test.
func checkPreflight(inv *inventory.Inventory, facts *plan.Facts, probes map[string]*preflightProbe, opts PreflightOptions) []Problem {
	maxSkew := orDefault(opts.MaxClockSkew, DefaultMaxClockSkew)
	maxFsync := orDefault(opts.MaxFsyncLatency, DefaultMaxFsyncLatency)
	minFree := opts.MinEtcdDiskFree
	if minFree <= 0 {
		minFree = DefaultMinEtcdDiskFree
	}
	external := inv.Topology.EtcdMode == inventory.EtcdExternal
	var out []Problem
	add := func(host, check, format string, args ...any) {
		out = append(out, Problem{Host: host, Check: check, Message: fmt.Sprintf(format, args...)})
	}
	hostnames := map[string][]string{}
	for _, h := range inv.Hosts {
		hf := facts.Hosts[h.Name]
		if hf == nil || !hf.Reachable {
			msg := "no facts gathered"
			if hf != nil && hf.Error != "" {
				msg = hf.Error
			}
			add(h.Name, "reachable", "%s", msg)
			continue
		}
		id, _, _ := strings.Cut(hf.OS, " ")
		if !slices.Contains(supportedOS, id) {
			add(h.Name, "os", "%q is not supported (want Debian or Ubuntu)", hf.OS)
		}
		if !slices.Contains(supportedArch, hf.Arch) {
			add(h.Name, "arch", "%q is not supported (want x86_64 or aarch64)", hf.Arch)
		}
		if hf.Hostname != "" {
			hostnames[hf.Hostname] = append(hostnames[hf.Hostname], h.Name)
		}
		p := probes[h.Name]
		if p == nil {
			continue
		}
		// Ports another process already holds: etcd and the kubelet would
		// fail to bind long after the plan started.
		var ports []int
		etcdHost := external && h.Has(inventory.RoleEtcd)
		if etcdHost && hf.Services["etcd"] != "active" {
			ports = append(ports, plan.EtcdClientPort, plan.EtcdPeerPort)
		}
		if h.Has(inventory.RoleMaster) && !hf.ControlPlane {
			ports = append(ports, inventory.DefaultAPIServerPort)
		}
		if h.IsNode() && !hf.Joined && !hf.ControlPlane {
			ports = append(ports, 10250)
		}
		if p.PortsKnown {
			for _, port := range ports {
				if slices.Contains(p.Listening, port) {
					add(h.Name, "ports", "port %d is already in use (ss -ltnp shows by what)", port)
				}
			}
		}
		// The host's clock is compared with the middle of the round trip.
		mid := p.Sent.Add(p.Got.Sub(p.Sent) / 2)
		if skew := p.Clock.Sub(mid); !p.Clock.IsZero() && (skew > maxSkew+p.Got.Sub(p.Sent)/2 || -skew > maxSkew+p.Got.Sub(p.Sent)/2) {
			add(h.Name, "clock", "clock is %s off the operator's (at most %s): run an NTP client (chrony, systemd-timesyncd)", skew.Round(time.Millisecond), maxSkew)
		}
		for _, bin := range opts.Binaries[h.Name] {
			if !p.Binaries[bin] {
				add(h.Name, "binaries", "%s is not installed and the inventory's artifacts block does not provide it", bin)
			}
		}
		if etcdHost {
			if p.DiskFree >= 0 && p.DiskFree < minFree {
				add(h.Name, "disk", "%d MiB free for etcd's data directory %s, want at least %d MiB", p.DiskFree>>20, inv.Etcd.DataDir, minFree>>20)
			}
			if p.Fsync > maxFsync {
				add(h.Name, "fsync", "a synchronous write on %s takes %s on average, etcd needs under %s: use an SSD for the data directory", inv.Etcd.DataDir, p.Fsync.Round(100*time.Microsecond), maxFsync)
			}
		}
	}
	for name, hosts := range hostnames {
		if len(hosts) > 1 {
			for _, h := range hosts {
				add(h, "hostname", "hostname %q is also the hostname of %s: Kubernetes and etcd need unique names", name, strings.Join(slices.DeleteFunc(slices.Clone(hosts), func(x string) bool { return x == h }), ", "))
			}
		}
	}
	slices.SortStableFunc(out, func(a, b Problem) int { return strings.Compare(a.Host, b.Host) })
	return out
}

func orDefault(v, def time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return v
}
