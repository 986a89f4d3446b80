package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/charmbracelet/log"
	"github.com/spf13/cobra"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/lab"
)

func init() { commands = append(commands, newLabCmd) }

// labOptions are the flags every lab subcommand shares.
type labOptions struct {
	name string
	dir  string
}

func (o *labOptions) stateDir() string {
	if o.dir != "" {
		return o.dir
	}
	return lab.DefaultDir(o.name)
}

// open returns the lab and a logger, or a clear error when there is none.
func (o *labOptions) open(g *globalOptions) (*lab.Lab, *log.Logger, error) {
	logger, err := g.logger()
	if err != nil {
		return nil, nil, err
	}
	l, err := lab.Open(o.stateDir(), logger)
	if errors.Is(err, lab.ErrNoLab) {
		return nil, nil, fmt.Errorf("lab %s: not up (no state in %s): run `kprov lab up` first", o.name, o.stateDir())
	}
	return l, logger, err
}

// signalContext is cancelled by Ctrl-C so a long wait stops cleanly.
func signalContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
}

func newLabCmd(g *globalOptions) *cobra.Command {
	o := &labOptions{}
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run local lab machines (systemd-nspawn) to try kprov on",
		Long: `kprov lab boots local machines with real systemd and sshd, each with its own
address, hostname and host key, and writes an inventory (lab.kprov.hcl) and a
known_hosts file for them. It needs root, systemd-nspawn, debootstrap and
iproute2 (scripts/setup installs them on Debian).`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&o.name, "name", "lab", "lab name")
	pf.StringVar(&o.dir, "dir", "", "lab state directory (default .kprov/lab/NAME)")
	cmd.AddCommand(
		newLabUpCmd(g, o),
		newLabStatusCmd(g, o),
		newLabDownCmd(g, o),
		newLabSSHCmd(g, o),
		newLabStopCmd(g, o),
		newLabStartCmd(g, o),
		newLabLinkCmd(g, o, "cut", "Disconnect a machine from the lab network (it keeps running)"),
		newLabLinkCmd(g, o, "restore", "Reconnect a machine that was cut off"),
		newLabNetemCmd(g, o),
		machineCmd(g, o, "pause", "Freeze every process of a machine (SIGSTOP), as a hung host", func(ctx context.Context, l *lab.Lab, m string) error {
			return l.Pause(ctx, m)
		}),
		machineCmd(g, o, "resume", "Continue a paused machine (SIGCONT)", func(ctx context.Context, l *lab.Lab, m string) error {
			return l.Resume(ctx, m)
		}),
		newLabArtifactsCmd(g),
	)
	return cmd
}

func newLabUpCmd(g *globalOptions, o *labOptions) *cobra.Command {
	var (
		machines    int
		topology    string
		cacheDir    string
		subnet      string
		mirror      string
		bootTimeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Boot the lab's machines (or report the running lab)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The same variable the e2e tests and `lab artifacts` users set for the artifact cache.
			opts := lab.Options{Name: o.name, Dir: o.stateDir(), CacheDir: cacheDir, ArtifactsDir: os.Getenv("KPROV_ARTIFACTS_DIR"),
				Mirror: mirror, BootTimeout: bootTimeout}
			if err := lab.ValidName(o.name); err != nil {
				return usageError("--name: %v", err)
			}
			var err error
			switch {
			case cmd.Flags().Changed("machines") && cmd.Flags().Changed("topology"):
				return usageError("give --machines or --topology, not both")
			case cmd.Flags().Changed("machines"):
				if opts.Machines, err = lab.CountMachines(machines); err != nil {
					return usageError("--machines: %v", err)
				}
				opts.Topology = strconv.Itoa(machines) + " machines"
			default:
				if opts.Machines, err = lab.TopologyMachines(topology); err != nil {
					return usageError("--topology: %v", err)
				}
				opts.Topology = topology
			}
			if subnet != "" {
				if opts.Subnet, err = parseSubnet(subnet); err != nil {
					return usageError("--subnet: %v", err)
				}
			}
			logger, err := g.logger()
			if err != nil {
				return err
			}
			ctx, cancel := signalContext(cmd)
			defer cancel()
			l, err := lab.Up(ctx, opts, logger)
			if err != nil {
				return fmt.Errorf("lab up: %w", err)
			}
			printStatus(g, l, l.Status(ctx))
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&machines, "machines", 3, "number of machines (node-1..node-N; the first 3 are masters when N >= 3)")
	f.StringVar(&topology, "topology", "single", "machine layout: "+strings.Join(lab.Topologies, ", "))
	f.StringVar(&cacheDir, "cache", lab.DefaultCacheDir, "cache for the base root filesystem")
	f.StringVar(&subnet, "subnet", "", "lab /24 inside 198.18.0.0/15 (default: the first free one)")
	f.StringVar(&mirror, "mirror", "", "Debian mirror for debootstrap (default: from the host's apt sources)")
	f.DurationVar(&bootTimeout, "boot-timeout", 2*time.Minute, "how long to wait for the machines' sshd")
	return cmd
}

func newLabStatusCmd(g *globalOptions, o *labOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the lab's machines and whether they answer SSH",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, _, err := o.open(g)
			if err != nil {
				return err
			}
			ctx, cancel := signalContext(cmd)
			defer cancel()
			printStatus(g, l, l.Status(ctx))
			return nil
		},
	}
}

// printStatus writes the lab's machines as a table and where its inventory is.
func printStatus(g *globalOptions, l *lab.Lab, machines []lab.MachineStatus) {
	fmt.Fprintf(g.stdout, "lab %s  subnet %s  dir %s\n", l.Name(), l.Subnet(), l.Dir())
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MACHINE\tADDRESS\tROLES\tSTATE\tSSH\tFAULTS")
	for _, m := range machines {
		ssh := "-"
		if m.State == "running" {
			ssh = "no"
			if m.SSH {
				ssh = "yes"
			}
		}
		var faults []string
		if m.Cut {
			faults = append(faults, "cut")
		}
		if m.Paused {
			faults = append(faults, "paused")
		}
		if m.Netem != "" {
			faults = append(faults, m.Netem)
		}
		if len(faults) == 0 {
			faults = []string{"-"}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Address, roleList(m.Roles), m.State, ssh, strings.Join(faults, ", "))
	}
	tw.Flush()
	fmt.Fprintf(g.stdout, "inventory %s\n", l.InventoryPath())
}

func newLabDownCmd(g *globalOptions, o *labOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop the lab and remove every process, mount, namespace and link it made, and its files (refuses a directory that is not a lab's)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger()
			if err != nil {
				return err
			}
			ctx, cancel := signalContext(cmd)
			defer cancel()
			if err := lab.Down(ctx, o.name, o.stateDir(), logger); err != nil {
				return fmt.Errorf("lab down: %w", err)
			}
			return nil
		},
	}
}

func newLabSSHCmd(g *globalOptions, o *labOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "ssh MACHINE [-- COMMAND...]",
		Short: "Log into a lab machine with the lab key (OpenSSH, strict host key checking)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); dash > 1 || (dash < 0 && len(args) > 1) {
				return usageError("lab ssh: one machine, then -- and the command")
			}
			l, _, err := o.open(g)
			if err != nil {
				return err
			}
			argv, err := l.SSHArgs(args[0], args[1:]...)
			if err != nil {
				return usageError("lab ssh: %v", err)
			}
			c := exec.CommandContext(cmd.Context(), argv[0], argv[1:]...)
			c.Stdin, c.Stdout, c.Stderr = os.Stdin, g.stdout, g.stderr
			err = c.Run()
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				// The remote command's status is the answer; ssh already printed why.
				return &exitCodeError{code: exit.ExitCode()}
			}
			return err
		},
	}
}

// machineCmd builds a subcommand acting on one named machine.
func machineCmd(g *globalOptions, o *labOptions, use, short string, act func(ctx context.Context, l *lab.Lab, machine string) error) *cobra.Command {
	return &cobra.Command{
		Use:   use + " MACHINE",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, _, err := o.open(g)
			if err != nil {
				return err
			}
			if _, err := l.Machine(args[0]); err != nil {
				return usageError("lab %s: %v", use, err)
			}
			ctx, cancel := signalContext(cmd)
			defer cancel()
			if err := act(ctx, l, args[0]); err != nil {
				return fmt.Errorf("lab %s: %w", use, err)
			}
			return nil
		},
	}
}

func newLabStopCmd(g *globalOptions, o *labOptions) *cobra.Command {
	var grace time.Duration
	cmd := machineCmd(g, o, "stop", "Power a machine off (its disk is kept)", func(ctx context.Context, l *lab.Lab, m string) error {
		return l.Stop(ctx, m, grace)
	})
	cmd.Flags().DurationVar(&grace, "grace", 20*time.Second, "time for an orderly shutdown before it is killed; 0 kills at once")
	return cmd
}

func newLabStartCmd(g *globalOptions, o *labOptions) *cobra.Command {
	var timeout time.Duration
	cmd := machineCmd(g, o, "start", "Boot a stopped machine and wait for its sshd", func(ctx context.Context, l *lab.Lab, m string) error {
		return l.Start(ctx, m, timeout)
	})
	cmd.Flags().DurationVar(&timeout, "boot-timeout", 2*time.Minute, "how long to wait for the machine's sshd")
	return cmd
}

func newLabLinkCmd(g *globalOptions, o *labOptions, use, short string) *cobra.Command {
	return machineCmd(g, o, use, short, func(ctx context.Context, l *lab.Lab, m string) error {
		if use == "cut" {
			return l.Cut(ctx, m)
		}
		return l.Restore(ctx, m)
	})
}

func newLabNetemCmd(g *globalOptions, o *labOptions) *cobra.Command {
	var (
		n     lab.Netem
		loss  string
		clear bool
	)
	cmd := machineCmd(g, o, "netem", "Add delay or packet loss to a machine's link (tc netem), or --clear it", func(ctx context.Context, l *lab.Lab, m string) error {
		if clear {
			return l.ClearNetem(ctx, m)
		}
		return l.SetNetem(ctx, m, n)
	})
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) error {
		if clear && (n.Delay != 0 || n.Jitter != 0 || loss != "") {
			return usageError("--clear takes no --delay, --jitter or --loss")
		}
		if loss != "" {
			v, err := strconv.ParseFloat(strings.TrimSuffix(loss, "%"), 64)
			if err != nil {
				return usageError("--loss %q: want a percentage such as 5%%", loss)
			}
			n.LossPercent = v
		}
		if !clear && n.Delay == 0 && n.LossPercent == 0 {
			return usageError("give --delay and/or --loss, or --clear")
		}
		return nil
	}
	f := cmd.Flags()
	f.DurationVar(&n.Delay, "delay", 0, "delay added in each direction, e.g. 100ms")
	f.DurationVar(&n.Jitter, "jitter", 0, "random variation of the delay, e.g. 10ms")
	f.StringVar(&loss, "loss", "", "share of packets dropped in each direction, e.g. 5%")
	f.BoolVar(&clear, "clear", false, "remove the impairment")
	return cmd
}

// parseSubnet reads a --subnet value.
func parseSubnet(s string) (p netip.Prefix, err error) { return netip.ParsePrefix(s) }

// roleList joins roles with commas, as the tables show them.
func roleList(roles []inventory.Role) string {
	out := make([]string, len(roles))
	for i, r := range roles {
		out[i] = string(r)
	}
	return strings.Join(out, ",")
}
