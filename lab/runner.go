package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Runner runs an external command to completion and returns its standard output.
type Runner interface {
	Run(ctx context.Context, name string, args ...string) ([]byte, error)
}

// execRunner runs commands on the local host.
type execRunner struct{}

var _ Runner = execRunner{}

// CommandError is a failed external command: what ran and what it said on stderr.
type CommandError struct {
	Command string
	Stderr  string
	Err     error
}

func (e *CommandError) Error() string {
	if e.Stderr == "" {
		return fmt.Sprintf("%s: %v", e.Command, e.Err)
	}
	return fmt.Sprintf("%s: %v: %s", e.Command, e.Err, e.Stderr)
}

func (e *CommandError) Unwrap() error { return e.Err }

// Run runs name with args; a failure carries the command line and its trimmed stderr.
func (execRunner) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	return runCommand(ctx, "", nil, name, args...)
}

// runCommand runs name with args in dir (the current directory if empty)
// with extra environment variables added to this process's.
func runCommand(ctx context.Context, dir string, env []string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), &CommandError{
			Command: strings.Join(append([]string{name}, args...), " "),
			Stderr:  strings.TrimSpace(lastLines(stderr.String(), 20)),
			Err:     err,
		}
	}
	return stdout.Bytes(), nil
}

// lastLines keeps the end of a long stderr, where the reason for a failure usually is.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
