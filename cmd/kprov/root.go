package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/charmbracelet/log"
	"github.com/spf13/cobra"
)

// Exit codes shared by every command.
const (
	exitOK    = 0
	exitError = 1 // the command ran and found errors (invalid inventory, failed host)
	exitUsage = 2 // the command line itself was wrong
)

// exitCodeError carries a specific exit code up to Main without printing anything more.
type exitCodeError struct {
	code int
	err  error
}

func (e *exitCodeError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitCodeError) Unwrap() error { return e.err }

// usageError marks an error in the command line (exit code 2).
func usageError(format string, args ...any) error {
	return &exitCodeError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// silentFailure reports exit code 1 for a command that has already printed its errors.
var silentFailure = &exitCodeError{code: exitError}

// globalOptions are the flags every command shares.
type globalOptions struct {
	file      string
	vars      []string
	logLevel  string
	logFormat string

	stdout io.Writer
	stderr io.Writer
	// redactors are stdout and stderr; loading an inventory with sensitive
	// variables sets its redactor on them.
	redactors []*redactWriter
	log       *log.Logger // set before any command runs, from --log-level and --log-format
}

// logger builds the charmbracelet logger the libraries receive as a parameter.
func (g *globalOptions) logger() (*log.Logger, error) {
	level, err := log.ParseLevel(g.logLevel)
	if err != nil {
		return nil, usageError("--log-level %q: want one of debug, info, warn, error", g.logLevel)
	}
	var formatter log.Formatter
	switch g.logFormat {
	case "text", "":
		formatter = log.TextFormatter
	case "json":
		formatter = log.JSONFormatter
	case "logfmt":
		formatter = log.LogfmtFormatter
	default:
		return nil, usageError("--log-format %q: want text, json or logfmt", g.logFormat)
	}
	return log.NewWithOptions(g.stderr, log.Options{
		Level:           level,
		Formatter:       formatter,
		ReportTimestamp: formatter != log.TextFormatter,
	}), nil
}

// newRoot assembles the kprov command tree; stdout and stderr are injected
// so tests can capture them. It also returns the options every command
// shares, whose writers redact sensitive values once an inventory is loaded.
func newRoot(stdout, stderr io.Writer) (*cobra.Command, *globalOptions) {
	out, errw := &redactWriter{w: stdout}, &redactWriter{w: stderr}
	stdout, stderr = out, errw
	g := &globalOptions{stdout: stdout, stderr: stderr, redactors: []*redactWriter{out, errw}}
	root := &cobra.Command{
		Use:   "kprov",
		Short: "Provision Kubernetes clusters onto machines you already own, over SSH",
		Long: `kprov reads an HCL inventory that assigns machines to roles (master, etcd,
infra, compute), renders kubeadm and etcd configuration, and applies it over
SSH in an order that keeps etcd and control-plane quorum at every step.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVarP(&g.file, "file", "f", "kprov.hcl", "the inventory `FILE`")
	pf.StringArrayVar(&g.vars, "var", nil, "set an inventory variable to `NAME=VALUE`; repeatable; -var as in Terraform works too")
	pf.StringVar(&g.logLevel, "log-level", "info", "log `LEVEL`: debug, info, warn, error")
	pf.StringVar(&g.logFormat, "log-format", "text", "log `FORMAT`: text, json, logfmt; anything but text also makes apply print plain lines on a terminal")
	// Check the logging flags before any command runs, so a typo fails at once.
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		l, err := g.logger()
		if err != nil {
			return err
		}
		g.log = l
		return nil
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitCodeError{code: exitUsage, err: err}
	})

	for _, add := range commands {
		root.AddCommand(add(g))
	}
	return root, g
}

// commands lists the constructors of the subcommands; each command file appends its own in init.
var commands []func(*globalOptions) *cobra.Command

// terraformStyleFlags accepts -var NAME=VALUE with one dash, as Terraform users
// type it; pflag would otherwise read it as the shorthands -v -a -r.
func terraformStyleFlags(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "--" {
			copy(out[i:], args[i:])
			break
		}
		if a == "-var" || strings.HasPrefix(a, "-var=") {
			a = "-" + a
		}
		out[i] = a
	}
	return out
}

// Main runs kprov with os.Args and returns the process exit code.
func Main() int {
	return run(os.Args[1:], os.Stdout, os.Stderr)
}

func run(args []string, stdout, stderr io.Writer) int {
	root, g := newRoot(stdout, stderr)
	// Errors go through the same redaction as everything else printed.
	stderr = g.stderr
	root.SetArgs(terraformStyleFlags(args))
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	var ce *exitCodeError
	if errors.As(err, &ce) {
		if ce.err != nil {
			fmt.Fprintf(stderr, "kprov: %v\n", ce.err)
		}
		return ce.code
	}
	// cobra reports unknown commands and bad arguments as plain errors.
	msg := err.Error()
	fmt.Fprintf(stderr, "kprov: %v\n", msg)
	if strings.HasPrefix(msg, "unknown command") || strings.Contains(msg, "arg(s)") {
		return exitUsage
	}
	return exitError
}
