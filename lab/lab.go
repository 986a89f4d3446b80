package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/charmbracelet/log"

	"github.com/kprov/kprov/internal/atomicfile"
)

// Options describe the lab `Up` brings up.
type Options struct {
	// Name names the lab; it prefixes its network namespaces. Default "lab".
	Name string
	// Dir holds the lab's state, keys, inventory and machine disks. Default ./.kprov/lab/NAME.
	Dir string
	// CacheDir holds the base root filesystem shared by all labs. Default /var/cache/kprov.
	CacheDir string
	// ArtifactsDir is the artifact cache (BuildArtifacts) whose binaries the
	// lab's inventory names in its artifacts block. Default CacheDir/artifacts.
	ArtifactsDir string
	// Machines lists the machines; empty means TopologyMachines("single").
	Machines []MachineSpec
	// Topology names the layout in the state file; informational.
	Topology string
	// Subnet is the lab's /24 inside 198.18.0.0/15; zero picks the first free one.
	Subnet netip.Prefix
	// SubnetWithin, when Subnet is zero, is the part of 198.18.0.0/15 the
	// first free /24 is picked from (zero: all of it), under the host-wide
	// lock, so labs coming up at once never pick the same one.
	SubnetWithin netip.Prefix
	// Mirror is the Debian mirror for debootstrap; empty reads the host's apt sources.
	Mirror string
	// KubernetesVersion and EtcdVersion are written into the inventory.
	KubernetesVersion string
	EtcdVersion       string
	// BootTimeout bounds the wait for every machine's sshd. Default 2 minutes.
	BootTimeout time.Duration
}

// DefaultDir is where a lab named name keeps its state unless told otherwise.
func DefaultDir(name string) string { return filepath.Join(".kprov", "lab", name) }

// DefaultCacheDir is where the base root filesystem and built artifacts are cached.
const DefaultCacheDir = "/var/cache/kprov"

func (o *Options) setDefaults() error {
	if o.Name == "" {
		o.Name = "lab"
	}
	if err := ValidName(o.Name); err != nil {
		return fmt.Errorf("lab %w", err)
	}
	if o.Dir == "" {
		o.Dir = DefaultDir(o.Name)
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return fmt.Errorf("lab directory: %w", err)
	}
	o.Dir = dir
	if o.CacheDir == "" {
		o.CacheDir = DefaultCacheDir
	}
	if o.ArtifactsDir == "" {
		o.ArtifactsDir = filepath.Join(o.CacheDir, "artifacts")
	}
	if len(o.Machines) == 0 {
		o.Machines, _ = TopologyMachines("single")
		o.Topology = "single"
	}
	if len(o.Machines) > MaxMachines {
		return fmt.Errorf("%d machines: at most %d", len(o.Machines), MaxMachines)
	}
	seen := map[string]bool{}
	for _, m := range o.Machines {
		if err := ValidName(m.Name); err != nil {
			return fmt.Errorf("machine %w", err)
		}
		if seen[m.Name] {
			return fmt.Errorf("machine %q listed twice", m.Name)
		}
		seen[m.Name] = true
	}
	if o.Subnet.IsValid() {
		if err := checkSubnet(o.Subnet); err != nil {
			return err
		}
	}
	if o.KubernetesVersion == "" {
		o.KubernetesVersion = DefaultKubernetesVersion
	}
	if o.EtcdVersion == "" {
		o.EtcdVersion = DefaultEtcdVersion
	}
	if o.BootTimeout == 0 {
		o.BootTimeout = 2 * time.Minute
	}
	return nil
}

// Lab is a lab on this host, as recorded in its state file.
type Lab struct {
	state  *State
	run    Runner
	logger *log.Logger
}

// Open returns the lab whose state is in dir; ErrNoLab when there is none.
func Open(dir string, logger *log.Logger) (*Lab, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("lab directory: %w", err)
	}
	s, err := LoadState(abs)
	if err != nil {
		return nil, err
	}
	return &Lab{state: s, run: execRunner{}, logger: logger}, nil
}

// Name is the lab's name.
func (l *Lab) Name() string { return l.state.Name }

// Dir is the lab's state directory.
func (l *Lab) Dir() string { return l.state.Dir }

// Subnet is the lab's /24; the host holds its .1 on the lab bridge.
func (l *Lab) Subnet() netip.Prefix { return l.state.Subnet }

// Machines returns a copy of the machines' recorded state.
func (l *Lab) Machines() []MachineState {
	out := slices.Clone(l.state.Machines)
	for i := range out {
		out[i].Roles = slices.Clone(out[i].Roles)
	}
	return out
}

// Machine returns a copy of the named machine's recorded state.
func (l *Lab) Machine(name string) (MachineState, error) {
	m, err := l.state.Machine(name)
	if err != nil {
		return MachineState{}, err
	}
	return *m, nil
}

// InventoryPath is the lab's kprov inventory.
func (l *Lab) InventoryPath() string { return filepath.Join(l.state.Dir, InventoryFile) }

// KnownHostsPath is the known_hosts file pinning every machine's host key.
func (l *Lab) KnownHostsPath() string { return filepath.Join(l.state.Dir, KnownHostsFile) }

// IdentityPath is the lab's SSH private key, authorized for root on every machine.
func (l *Lab) IdentityPath() string { return filepath.Join(l.state.Dir, IdentityFile) }

func (l *Lab) machineDir(name string) string { return filepath.Join(l.state.Dir, "machines", name) }

// lockLab serialises operations on one lab across processes.
func lockLab(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("lab directory: %w", err)
	}
	return lockFile(filepath.Join(dir, ".lock"))
}

// Up brings the lab up and waits until every machine answers SSH. On a lab
// that is already running it only checks it; machines that are stopped or
// whose processes died (a killed previous run) are cleaned up and booted
// again from their own disks, keeping their host keys.
func Up(ctx context.Context, opts Options, logger *log.Logger) (*Lab, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if err := Preflight(); err != nil {
		return nil, err
	}
	// A lab never spreads its files into a directory that is someone else's.
	if err := checkLabDir(opts.Dir); err != nil {
		return nil, err
	}
	unlock, err := lockLab(opts.Dir)
	if err != nil {
		return nil, err
	}
	defer unlock()

	l := &Lab{run: execRunner{}, logger: logger}
	switch s, err := LoadState(opts.Dir); {
	case err == nil && s.Name != opts.Name:
		return nil, fmt.Errorf("%s holds lab %q, not %q", opts.Dir, s.Name, opts.Name)
	case err == nil && !s.Subnet.IsValid():
		// Only the marker create writes first: an earlier create died early.
		if l.state, err = l.create(ctx, opts); err != nil {
			return nil, err
		}
	case err == nil:
		if !sameMachines(s.Machines, opts.Machines) {
			return nil, fmt.Errorf("lab %s exists with other machines (%s); run `kprov lab down` first to change its layout", s.Name, s.Topology)
		}
		l.state = s
	case errors.Is(err, ErrNoLab):
		if l.state, err = l.create(ctx, opts); err != nil {
			return nil, err
		}
	default:
		return nil, err
	}
	if err := l.ensureRunning(ctx, opts); err != nil {
		return l, err
	}
	return l, nil
}

func sameMachines(have []MachineState, want []MachineSpec) bool {
	return slices.EqualFunc(have, want, func(h MachineState, w MachineSpec) bool {
		return h.Name == w.Name && slices.Equal(h.Roles, w.Roles)
	})
}

// create records a new lab: subnet, names, keys, inventory. Nothing is
// running yet; leftovers of an earlier lab of the same name are removed first.
func (l *Lab) create(ctx context.Context, opts Options) (*State, error) {
	l.state = &State{Name: opts.Name, Dir: opts.Dir}
	// The state file marks the directory as the lab's before anything else
	// is written into it, so Down recognises it even if this run dies here.
	if err := l.state.save(); err != nil {
		return nil, err
	}
	if err := l.removeLeftovers(ctx); err != nil {
		return nil, err
	}
	rootfs, err := ensureRootfs(ctx, l.run, opts.CacheDir, opts.Mirror, l.logger)
	if err != nil {
		return nil, err
	}
	// The host-wide lock keeps two labs coming up at once from picking the same subnet.
	unlock, err := lockFile("/run/kprov-lab.lock")
	if err != nil {
		return nil, err
	}
	defer unlock()
	used, err := hostPrefixes(ctx, l.run)
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	subnet := opts.Subnet
	if subnet.IsValid() {
		for _, u := range used {
			if u.Overlaps(subnet) {
				return nil, fmt.Errorf("subnet %s overlaps %s, already on this host", subnet, u)
			}
		}
	} else if !opts.SubnetWithin.IsValid() {
		if subnet, err = PickSubnet(used); err != nil {
			return nil, err
		}
	} else if subnet, err = PickSubnetIn(opts.SubnetWithin, used); err != nil {
		return nil, err
	}

	s := &State{
		Name: opts.Name, Dir: opts.Dir, Subnet: subnet, Gateway: gatewayAddr(subnet),
		Bridge: bridgeName(opts.Name), Rootfs: rootfs, Topology: opts.Topology, CreatedAt: time.Now().UTC(),
	}
	client, err := newSSHKeyPair("kprov-lab-" + opts.Name)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(s.Dir, IdentityFile), client.private, 0o600); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(s.Dir, IdentityFile+".pub"), client.public, 0o644); err != nil {
		return nil, err
	}
	for i, spec := range opts.Machines {
		index := i + 1
		m := MachineState{
			Name: spec.Name, Index: index, Roles: slices.Clone(spec.Roles),
			Address:  machineAddr(subnet, index),
			Netns:    netnsName(opts.Name, spec.Name),
			HostVeth: hostVethName(opts.Name, index),
			Merged:   filepath.Join(s.Dir, "machines", spec.Name, "merged"),
		}
		dir := filepath.Join(s.Dir, "machines", spec.Name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("%s: %w", spec.Name, err)
		}
		hostKey, err := newSSHKeyPair("root@" + spec.Name)
		if err != nil {
			return nil, fmt.Errorf("%s: host key: %w", spec.Name, err)
		}
		if err := atomicfile.Write(filepath.Join(dir, "ssh_host_ed25519_key"), hostKey.private, 0o600); err != nil {
			return nil, fmt.Errorf("%s: %w", spec.Name, err)
		}
		m.HostKey = string(hostKey.public)
		s.Machines = append(s.Machines, m)
	}
	// Record everything before the first link or mount exists.
	if err := s.save(); err != nil {
		return nil, err
	}
	p := InventoryParams{
		KubernetesVersion: opts.KubernetesVersion, EtcdVersion: opts.EtcdVersion,
		IdentityPath:   filepath.Join(s.Dir, IdentityFile),
		KnownHostsPath: filepath.Join(s.Dir, KnownHostsFile),
	}
	if p.Artifacts, err = CachedArtifacts(opts.ArtifactsDir, Versions{Etcd: opts.EtcdVersion, Kubernetes: opts.KubernetesVersion}); err != nil {
		return nil, err
	}
	if len(p.Artifacts) == 0 {
		l.logger.Info("no cached artifacts: the lab's hosts must bring their own binaries (kprov lab artifacts builds them)", "cache", opts.ArtifactsDir)
	}
	if err := atomicfile.Write(p.KnownHostsPath, RenderKnownHosts(s), 0o644); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(s.Dir, InventoryFile), RenderInventory(s, p), 0o644); err != nil {
		return nil, err
	}
	if err := ensureBridge(ctx, l.run, s.Bridge, s.Gateway, s.Subnet); err != nil {
		return nil, err
	}
	return s, nil
}

// ensureRunning boots every machine that is not running, in parallel, then
// waits for all of them to answer SSH.
func (l *Lab) ensureRunning(ctx context.Context, opts Options) error {
	if err := ensureBridge(ctx, l.run, l.state.Bridge, l.state.Gateway, l.state.Subnet); err != nil {
		return err
	}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
	)
	booted := 0
	for i := range l.state.Machines {
		m := &l.state.Machines[i]
		if l.healthy(ctx, m) {
			continue
		}
		booted++
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := l.boot(ctx, m)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", m.Name, err))
			}
		}()
	}
	wg.Wait()
	if err := l.state.save(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if booted == 0 {
		l.logger.Info("lab already running", "lab", l.state.Name, "machines", len(l.state.Machines))
	}
	waitCtx, cancel := context.WithTimeout(ctx, opts.BootTimeout)
	defer cancel()
	return l.waitAll(waitCtx)
}

// healthy reports whether a machine from an earlier run is still fine: its
// systemd-nspawn is alive and it answers SSH. A process that is alive but
// silent (its container was killed, it hangs, it is cut off) does not count:
// up reboots it from its disk.
func (l *Lab) healthy(ctx context.Context, m *MachineState) bool {
	if !isNspawnFor(m.PID, m.Merged) {
		return false
	}
	if l.Reachable(ctx, m.Name, 5*time.Second) {
		return true
	}
	l.logger.Warn("machine runs but does not answer SSH; rebooting it", "machine", m.Name)
	return false
}

// waitAll waits for every running machine's sshd, in parallel.
func (l *Lab) waitAll(ctx context.Context) error {
	start := time.Now()
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
	)
	for _, m := range l.state.Machines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.WaitSSH(ctx, m.Name); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	l.logger.Info("lab ready", "lab", l.state.Name, "machines", len(l.state.Machines), "waited", time.Since(start).Round(10*time.Millisecond))
	return nil
}

// boot cleans up whatever a dead earlier instance of the machine left and
// boots it: overlay mount, per-machine files, namespace, veth, systemd-nspawn.
func (l *Lab) boot(ctx context.Context, m *MachineState) error {
	if err := l.teardown(ctx, m); err != nil {
		return err
	}
	if err := raiseInotifyLimits(); err != nil {
		return err
	}
	dir := l.machineDir(m.Name)
	upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	for _, d := range []string{upper, work, m.Merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", l.state.Rootfs, upper, work)
	if err := syscall.Mount("overlay", m.Merged, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay on %s (does the kernel support overlayfs here?): %w", m.Merged, err)
	}
	if err := l.personalize(m); err != nil {
		return err
	}
	if err := l.plugNetwork(ctx, m); err != nil {
		return err
	}
	return l.startNspawn(m)
}

// personalize writes what makes the machine itself into its disk: hostname,
// machine ID, host key, the lab key for root, the lab's names in /etc/hosts,
// and the unit that prepares it for containerd and kubelet.
func (l *Lab) personalize(m *MachineState) error {
	root := m.Merged
	hostKey, err := os.ReadFile(filepath.Join(l.machineDir(m.Name), "ssh_host_ed25519_key"))
	if err != nil {
		return fmt.Errorf("read host key: %w", err)
	}
	authorized, err := os.ReadFile(filepath.Join(l.state.Dir, IdentityFile+".pub"))
	if err != nil {
		return fmt.Errorf("read lab key: %w", err)
	}
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	// By index, reading only fields fixed at creation: other machines boot concurrently and update their own PIDs.
	for i := range l.state.Machines {
		o := &l.state.Machines[i]
		hosts += fmt.Sprintf("%s\t%s\n", o.Address, o.Name)
	}
	files := []struct {
		path string
		data []byte
		perm os.FileMode
	}{
		{"etc/hostname", []byte(m.Name + "\n"), 0o644},
		{"etc/hosts", []byte(hosts), 0o644},
		{"etc/ssh/ssh_host_ed25519_key", hostKey, 0o600},
		{"etc/ssh/ssh_host_ed25519_key.pub", []byte(m.HostKey), 0o644},
		{"root/.ssh/authorized_keys", authorized, 0o600},
	}
	if _, err := os.Stat(filepath.Join(root, "etc/machine-id")); err != nil || fileEmpty(filepath.Join(root, "etc/machine-id")) {
		// systemd reads a fixed machine ID from here; kubeadm and etcd tools expect each host's to differ.
		id := make([]byte, 16)
		rand.Read(id)
		files = append(files, struct {
			path string
			data []byte
			perm os.FileMode
		}{"etc/machine-id", []byte(hex.EncodeToString(id) + "\n"), 0o444})
	}
	if err := os.MkdirAll(filepath.Join(root, "root/.ssh"), 0o700); err != nil {
		return err
	}
	for _, f := range files {
		if err := atomicfile.Write(filepath.Join(root, f.path), f.data, f.perm); err != nil {
			return err
		}
	}
	// Written at every boot rather than into the shared root, so a machine
	// booting from an older disk gets the current unit too.
	return writePrepUnit(root)
}

func fileEmpty(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Size() == 0
}

// plugNetwork gives the machine its namespace and a veth pair: eth0 with the
// machine's address inside, the host end on the lab bridge.
func (l *Lab) plugNetwork(ctx context.Context, m *MachineState) error {
	peer := peerVethName(l.state.Name, m.Index)
	prefix := netip.PrefixFrom(m.Address, l.state.Subnet.Bits()).String()
	steps := [][]string{
		{"ip", "netns", "add", m.Netns},
		// A fixed MAC per machine keeps the host's and the other machines' ARP
		// caches right across a restart, as with a real machine's NIC.
		{"ip", "link", "add", m.HostVeth, "type", "veth", "peer", "name", peer, "address", machineMAC(l.state.Name, m.Index)},
		{"ip", "link", "set", peer, "netns", m.Netns},
		{"ip", "-n", m.Netns, "link", "set", peer, "name", "eth0"},
		{"ip", "-n", m.Netns, "addr", "add", prefix, "dev", "eth0"},
		{"ip", "-n", m.Netns, "link", "set", "lo", "up"},
		{"ip", "-n", m.Netns, "link", "set", "eth0", "up"},
		// kubeadm picks the node address from the default route; the bridge does not forward it anywhere.
		{"ip", "-n", m.Netns, "route", "add", "default", "via", l.state.Gateway.String()},
		{"ip", "link", "set", m.HostVeth, "master", l.state.Bridge},
		{"ip", "link", "set", m.HostVeth, "up"},
	}
	for _, s := range steps {
		if _, err := l.run.Run(ctx, s[0], s[1:]...); err != nil {
			return fmt.Errorf("network: %w", err)
		}
	}
	m.Cut, m.Netem, m.Paused = false, "", false
	return nil
}

// machineMAC is a locally administered unicast address (02:...) made of the lab ID and the machine index.
func machineMAC(lab string, index int) string {
	id := labID(lab)
	return fmt.Sprintf("02:%s:%s:%s:%02x:%02x", id[0:2], id[2:4], id[4:6], index>>8&0xff, index&0xff)
}

// nspawnArgs are systemd-nspawn's arguments for booting the machine.
func nspawnArgs(m *MachineState) []string {
	return []string{
		"--quiet", "--boot",
		"--directory", m.Merged,
		"--machine", m.Name,
		"--network-namespace-path", filepath.Join("/run/netns", m.Netns),
		// The host may have no systemd or D-Bus to register with.
		"--register=no", "--keep-unit",
		"--link-journal=no", "--console=read-only",
		// Kubelet, containerd and runc manage cgroups, namespaces, mounts
		// and iptables inside, which nspawn's default capability set
		// forbids. A machine without a user namespace is the host's root
		// either way: nspawn is not a security boundary here.
		"--capability=all",
		// runc joins a session keyring for every container; nspawn's
		// default seccomp filter refuses the keyring calls.
		"--system-call-filter=@keyring",
	}
}

// nspawnEnv is the caller's environment without nspawn's SYSTEMD_NSPAWN_*
// switches: API_VFS_WRITABLE would let kubelet write the host's kernel-wide
// sysctls (vm.*, kernel.*), UNIFIED_HIERARCHY would ask for cgroup v2 where
// the host binds its controllers to v1. The lab's machines must not depend
// on what the operator's shell happens to export.
func nspawnEnv(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		return strings.HasPrefix(kv, "SYSTEMD_NSPAWN_")
	})
}

// startNspawn starts systemd-nspawn in its own session so it outlives kprov,
// with its console going to console.log in the machine's directory.
func (l *Lab) startNspawn(m *MachineState) error {
	console, err := os.OpenFile(filepath.Join(l.machineDir(m.Name), "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer console.Close()
	cmd := exec.Command("systemd-nspawn", nspawnArgs(m)...)
	cmd.Env = nspawnEnv(os.Environ())
	cmd.Stdout, cmd.Stderr = console, console
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	dirs, err := ownMachineCgroups(cgroupName(l.state.Name, m.Name))
	if err != nil {
		return err
	}
	m.Cgroups = dirs
	if err := createCgroups(dirs); err != nil {
		return err
	}
	if err := startInCgroups(cmd, dirs); err != nil {
		return fmt.Errorf("start systemd-nspawn: %w", err)
	}
	// Reap it if it exits while this process lives, so its PID does not linger as a zombie.
	go cmd.Wait()
	m.PID = cmd.Process.Pid
	m.Stopped = false
	l.logger.Debug("machine booting", "machine", m.Name, "address", m.Address, "pid", m.PID)
	return nil
}

// teardown stops the machine's processes and removes its mount, cgroups,
// namespace and link, keeping its disk (upper directory) and host key. Every step is
// skipped when already done, so it also cleans up after a crash.
func (l *Lab) teardown(ctx context.Context, m *MachineState) error {
	// Its cgroups: the ones recorded (if they carry its name), and any a
	// crash kept from the record.
	name := cgroupName(l.state.Name, m.Name)
	cgroups, err := findCgroups(func(n string) bool { return n == name })
	if err != nil {
		return err
	}
	for _, d := range m.Cgroups {
		if filepath.Base(d) == name && !slices.Contains(cgroups, d) {
			cgroups = append(cgroups, d)
		}
	}
	var pids []int
	if isNspawnFor(m.PID, m.Merged) {
		pids = append(pids, m.PID)
	}
	// Killing systemd-nspawn does not kill the container: find its
	// processes by their network namespace, and by their cgroups (a pod's
	// containers run in network namespaces of their own).
	inside, err := netnsPIDs(ctx, l.run, m.Netns)
	if err != nil {
		return err
	}
	pids = append(pids, inside...)
	killAll(pids)
	if err := killCgroups(ctx, cgroups, 10*time.Second); err != nil {
		return err
	}
	if !waitGone(ctx, pids, 10*time.Second) {
		return fmt.Errorf("processes %v did not exit after SIGKILL", pids)
	}
	m.PID = 0
	if err := unmount(m.Merged); err != nil {
		return err
	}
	if err := removeCgroups(ctx, cgroups); err != nil {
		return err
	}
	m.Cgroups = nil
	if err := deleteNetns(ctx, l.run, m.Netns); err != nil {
		return err
	}
	// The veth pair usually dies with the namespace; remove the host end if a crash left it.
	return deleteLink(ctx, l.run, m.HostVeth)
}

// Bridge is the host bridge the lab's machines hang off.
func (l *Lab) Bridge() string { return l.state.Bridge }
