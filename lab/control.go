package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/charmbracelet/log"

	"github.com/kprov/kprov/inventory"
)

// withMachine runs f on the named machine under the lab lock and saves the state afterwards.
func (l *Lab) withMachine(name string, f func(m *MachineState) error) error {
	if err := Preflight(); err != nil {
		return err
	}
	unlock, err := lockLab(l.state.Dir)
	if err != nil {
		return err
	}
	defer unlock()
	// Another process may have changed the lab since Open.
	s, err := LoadState(l.state.Dir)
	if err != nil {
		return err
	}
	l.state = s
	m, err := s.Machine(name)
	if err != nil {
		return err
	}
	ferr := f(m)
	if err := s.save(); err != nil {
		return errors.Join(ferr, err)
	}
	if ferr != nil {
		return fmt.Errorf("%s: %w", name, ferr)
	}
	return nil
}

// Stop powers the machine off: systemd-nspawn is asked for an orderly
// shutdown (SIGTERM), killed after grace, and the machine's namespace and
// link are removed so its address stops answering, like a switched-off host.
// A grace of 0 kills at once, like pulling the plug.
func (l *Lab) Stop(ctx context.Context, name string, grace time.Duration) error {
	return l.withMachine(name, func(m *MachineState) error {
		if isNspawnFor(m.PID, m.Merged) && grace > 0 {
			if err := syscall.Kill(m.PID, syscall.SIGTERM); err == nil {
				waitGone(ctx, []int{m.PID}, grace)
			}
		}
		if err := l.teardown(ctx, m); err != nil {
			return err
		}
		m.Stopped, m.Cut, m.Netem, m.Paused = true, false, "", false
		l.logger.Info("machine stopped", "machine", name)
		return nil
	})
}

// Start boots a stopped (or crashed) machine from its own disk and waits for its sshd.
func (l *Lab) Start(ctx context.Context, name string, timeout time.Duration) error {
	err := l.withMachine(name, func(m *MachineState) error {
		if isNspawnFor(m.PID, m.Merged) {
			return nil
		}
		if err := ensureBridge(ctx, l.run, l.state.Bridge, l.state.Gateway, l.state.Subnet); err != nil {
			return err
		}
		return l.boot(ctx, m)
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := l.WaitSSH(ctx, name); err != nil {
		return err
	}
	l.logger.Info("machine started", "machine", name)
	return nil
}

// Cut takes the host end of the machine's veth down: the machine keeps
// running but can reach neither the host nor the other machines, as if its
// cable were pulled.
func (l *Lab) Cut(ctx context.Context, name string) error {
	return l.setLink(ctx, name, true)
}

// Restore reconnects a machine that was cut off.
func (l *Lab) Restore(ctx context.Context, name string) error {
	return l.setLink(ctx, name, false)
}

func (l *Lab) setLink(ctx context.Context, name string, cut bool) error {
	return l.withMachine(name, func(m *MachineState) error {
		if !linkExists(m.HostVeth) {
			return fmt.Errorf("not running (no link %s)", m.HostVeth)
		}
		state := "up"
		if cut {
			state = "down"
		}
		if _, err := l.run.Run(ctx, "ip", "link", "set", m.HostVeth, state); err != nil {
			return err
		}
		m.Cut = cut
		l.logger.Info("machine link "+state, "machine", name)
		return nil
	})
}

// Pause freezes every process of the machine with SIGSTOP, as a machine that
// hangs: its kernel still answers TCP handshakes, but nothing replies.
func (l *Lab) Pause(ctx context.Context, name string) error {
	return l.signalMachine(ctx, name, syscall.SIGSTOP, true)
}

// Resume continues a paused machine with SIGCONT.
func (l *Lab) Resume(ctx context.Context, name string) error {
	return l.signalMachine(ctx, name, syscall.SIGCONT, false)
}

func (l *Lab) signalMachine(ctx context.Context, name string, sig syscall.Signal, paused bool) error {
	return l.withMachine(name, func(m *MachineState) error {
		pids, err := netnsPIDs(ctx, l.run, m.Netns)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return errors.New("not running")
		}
		for _, p := range pids {
			if err := syscall.Kill(p, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("signal %d: %w", p, err)
			}
		}
		m.Paused = paused
		l.logger.Info("machine "+map[bool]string{true: "paused", false: "resumed"}[paused], "machine", name)
		return nil
	})
}

// Netem describes impaired network conditions for one machine.
type Netem struct {
	// Delay is added to every packet in each direction, so a round trip grows by twice it.
	Delay time.Duration
	// Jitter varies Delay by up to this much.
	Jitter time.Duration
	// LossPercent drops this share of packets in each direction (0 to 100).
	LossPercent float64
}

// args renders the netem qdisc parameters for tc.
func (n Netem) args() ([]string, error) {
	if n.Delay < 0 || n.Jitter < 0 || n.LossPercent < 0 || n.LossPercent > 100 {
		return nil, fmt.Errorf("netem %s: want a non-negative delay and a loss from 0 to 100%%", n)
	}
	if n.Jitter > 0 && n.Delay == 0 {
		return nil, errors.New("netem: jitter needs a delay")
	}
	var a []string
	if n.Delay > 0 {
		a = append(a, "delay", fmt.Sprintf("%dus", n.Delay.Microseconds()))
		if n.Jitter > 0 {
			a = append(a, fmt.Sprintf("%dus", n.Jitter.Microseconds()))
		}
	}
	if n.LossPercent > 0 {
		a = append(a, "loss", strconv.FormatFloat(n.LossPercent, 'f', -1, 64)+"%")
	}
	if len(a) == 0 {
		return nil, errors.New("netem: give a delay or a loss (or clear it)")
	}
	return a, nil
}

func (n Netem) String() string {
	s := []string{}
	if n.Delay > 0 {
		s = append(s, "delay "+n.Delay.String())
		if n.Jitter > 0 {
			s = append(s, "jitter "+n.Jitter.String())
		}
	}
	if n.LossPercent != 0 {
		s = append(s, "loss "+strconv.FormatFloat(n.LossPercent, 'f', -1, 64)+"%")
	}
	return strings.Join(s, " ")
}

// ErrNoNetem is returned when the kernel has no netem queueing discipline
// (CONFIG_NET_SCH_NETEM), so delay and loss cannot be applied on this host.
var ErrNoNetem = errors.New("the kernel has no netem qdisc (CONFIG_NET_SCH_NETEM, module sch_netem)")

// SetNetem impairs the machine's link with tc netem on both ends of its veth,
// so traffic to and from the machine is affected alike.
func (l *Lab) SetNetem(ctx context.Context, name string, n Netem) error {
	args, err := n.args()
	if err != nil {
		return err
	}
	return l.withMachine(name, func(m *MachineState) error {
		if !linkExists(m.HostVeth) {
			return fmt.Errorf("not running (no link %s)", m.HostVeth)
		}
		for _, prefix := range [][]string{{"qdisc", "replace", "dev", m.HostVeth}, {"-n", m.Netns, "qdisc", "replace", "dev", "eth0"}} {
			if _, err := l.run.Run(ctx, "tc", append(append(prefix, "root", "netem"), args...)...); err != nil {
				var ce *CommandError
				if errors.As(err, &ce) && strings.Contains(ce.Stderr, "qdisc kind is unknown") {
					return fmt.Errorf("%w: %w", ErrNoNetem, err)
				}
				return err
			}
		}
		m.Netem = n.String()
		l.logger.Info("machine link impaired", "machine", name, "netem", m.Netem)
		return nil
	})
}

// ClearNetem removes any netem impairment from the machine's link.
func (l *Lab) ClearNetem(ctx context.Context, name string) error {
	return l.withMachine(name, func(m *MachineState) error {
		for _, a := range [][]string{{"qdisc", "del", "dev", m.HostVeth, "root"}, {"-n", m.Netns, "qdisc", "del", "dev", "eth0", "root"}} {
			if _, err := l.run.Run(ctx, "tc", a...); err != nil && !noQdisc(err) {
				return err
			}
		}
		m.Netem = ""
		return nil
	})
}

// noQdisc reports whether tc failed only because there was nothing to delete.
func noQdisc(err error) bool {
	var ce *CommandError
	if !errors.As(err, &ce) {
		return false
	}
	return strings.Contains(ce.Stderr, "No such file") || strings.Contains(ce.Stderr, "Cannot find device") ||
		strings.Contains(ce.Stderr, "Cannot delete qdisc with handle of zero") || strings.Contains(ce.Stderr, "Cannot open network namespace")
}

// MachineStatus is what `lab status` shows for one machine.
type MachineStatus struct {
	Name    string
	Address string
	Roles   []inventory.Role
	// State is running, stopped (by `lab stop`) or down (its processes died).
	State string
	// SSH reports whether sshd answered with the pinned host key.
	SSH    bool
	Cut    bool
	Paused bool
	Netem  string
}

// Status checks every machine: its process, and whether it answers SSH.
func (l *Lab) Status(ctx context.Context) []MachineStatus {
	out := make([]MachineStatus, len(l.state.Machines))
	done := make(chan struct{})
	for i, m := range l.state.Machines {
		go func() {
			defer func() { done <- struct{}{} }()
			st := MachineStatus{Name: m.Name, Address: m.Address.String(), Roles: m.Roles, Cut: m.Cut, Paused: m.Paused, Netem: m.Netem}
			switch {
			case isNspawnFor(m.PID, m.Merged):
				st.State = "running"
				st.SSH = l.Reachable(ctx, m.Name, 3*time.Second)
			case m.Stopped:
				st.State = "stopped"
			default:
				st.State = "down"
			}
			out[i] = st
		}()
	}
	for range l.state.Machines {
		<-done
	}
	return out
}

// Down removes the lab named name with state in dir: every process,
// mount, namespace and link, found from the state file and again by name, so
// it also cleans up after a crash or a lost state file. In dir it removes
// only what the lab made, and it refuses a directory holding files but no
// lab state (ErrNotLabDir). The base root filesystem cache stays.
func Down(ctx context.Context, name, dir string, logger *log.Logger) error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	if err := ValidName(name); err != nil {
		return fmt.Errorf("lab %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("lab directory: %w", err)
	}
	if _, err := os.Stat(abs); errors.Is(err, os.ErrNotExist) {
		l := &Lab{state: &State{Name: name, Dir: abs}, run: execRunner{}, logger: logger}
		return l.removeLeftovers(ctx)
	}
	// Checked before the lock file is made: nothing is written into, or
	// removed from, a directory that is not a lab's.
	if err := checkLabDir(abs); err != nil {
		return err
	}
	unlock, err := lockLab(abs)
	if err != nil {
		return err
	}
	defer unlock()
	l := &Lab{state: &State{Name: name, Dir: abs}, run: execRunner{}, logger: logger}
	if s, err := LoadState(abs); err == nil {
		if s.Name != name {
			return fmt.Errorf("%s holds lab %q, not %q", abs, s.Name, name)
		}
		l.state = s
	} else if !errors.Is(err, ErrNoLab) {
		logger.Warn("lab state unreadable; cleaning up by name", "err", err)
	}
	if err := l.removeLeftovers(ctx); err != nil {
		return err
	}
	kept, err := removeLabDir(abs, name)
	if err != nil {
		return err
	}
	if len(kept) > 0 {
		logger.Warn("kept the lab directory: it holds files the lab did not make", "dir", abs, "kept", strings.Join(kept, " "))
	}
	logger.Info("lab down", "lab", name)
	return nil
}

// removeLeftovers tears down every machine in the state, then whatever else
// carries the lab's names: nspawn processes under its directory, mounts,
// cgroups, namespaces and links.
func (l *Lab) removeLeftovers(ctx context.Context) error {
	var errs []error
	for i := range l.state.Machines {
		m := &l.state.Machines[i]
		if err := l.teardown(ctx, m); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m.Name, err))
		}
	}
	pids := nspawnPIDsUnder(l.state.Dir)
	for _, ns := range listNetns(netnsPrefix(l.state.Name)) {
		inside, err := netnsPIDs(ctx, l.run, ns)
		if err != nil {
			errs = append(errs, err)
		}
		pids = append(pids, inside...)
	}
	killAll(pids)
	prefix := cgroupPrefix(l.state.Name)
	cgroups, err := findCgroups(func(n string) bool {
		return strings.HasPrefix(n, prefix) && ValidName(strings.TrimPrefix(n, prefix)) == nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	if err := killCgroups(ctx, cgroups, 10*time.Second); err != nil {
		errs = append(errs, err)
	}
	if !waitGone(ctx, pids, 10*time.Second) {
		errs = append(errs, fmt.Errorf("processes %v did not exit after SIGKILL", pids))
	}
	mounts, err := mountsUnder(l.state.Dir)
	if err != nil {
		errs = append(errs, err)
	}
	for _, mp := range mounts {
		if err := unmount(mp); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeCgroups(ctx, cgroups); err != nil {
		errs = append(errs, err)
	}
	for _, ns := range listNetns(netnsPrefix(l.state.Name)) {
		if err := deleteNetns(ctx, l.run, ns); err != nil {
			errs = append(errs, err)
		}
	}
	for _, link := range listLinks(linkPrefix(l.state.Name)) {
		if err := deleteLink(ctx, l.run, link); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
