package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// ClientConfig returns an SSH client configuration for the lab's machines:
// root with the lab key, host keys checked strictly against the lab's
// known_hosts, and only ed25519 host keys offered, the one type pinned there.
func (l *Lab) ClientConfig() (*ssh.ClientConfig, error) {
	keyPEM, err := os.ReadFile(l.IdentityPath())
	if err != nil {
		return nil, fmt.Errorf("read lab key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("parse lab key %s: %w", l.IdentityPath(), err)
	}
	hostKeys, err := knownhosts.New(l.KnownHostsPath())
	if err != nil {
		return nil, fmt.Errorf("read lab known_hosts: %w", err)
	}
	return &ssh.ClientConfig{
		User:              "root",
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   hostKeys,
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
		Timeout:           5 * time.Second,
	}, nil
}

// Dial opens an SSH connection to the named machine, its host key checked.
func (l *Lab) Dial(ctx context.Context, machine string) (*ssh.Client, error) {
	m, err := l.state.Machine(machine)
	if err != nil {
		return nil, err
	}
	cfg, err := l.ClientConfig()
	if err != nil {
		return nil, err
	}
	return dialSSH(ctx, net.JoinHostPort(m.Address.String(), "22"), cfg)
}

func dialSSH(ctx context.Context, addr string, cfg *ssh.ClientConfig) (*ssh.Client, error) {
	d := net.Dialer{Timeout: cfg.Timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

// Output runs a command on the named machine over SSH and returns its standard output.
func (l *Lab) Output(ctx context.Context, machine, command string) ([]byte, error) {
	client, err := l.Dial(ctx, machine)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", machine, err)
	}
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", machine, err)
	}
	defer sess.Close()
	var stderr bytes.Buffer
	sess.Stderr = &stderr
	out, err := sess.Output(command)
	if err != nil {
		return out, fmt.Errorf("%s: %s: %w: %s", machine, command, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// WaitSSH waits until the named machine answers SSH with its pinned host key
// and reports its own hostname: a health check, so a test never sleeps and
// hopes. A host key mismatch is final and returned at once.
func (l *Lab) WaitSSH(ctx context.Context, machine string) error {
	var last error
	for {
		out, err := l.Output(ctx, machine, "cat /etc/hostname")
		if err == nil {
			if got := strings.TrimSpace(string(out)); got != machine {
				return fmt.Errorf("%s: answers as %q: another machine holds its address", machine, got)
			}
			return nil
		}
		var keyErr *knownhosts.KeyError
		if errors.As(err, &keyErr) && len(keyErr.Want) > 0 {
			return fmt.Errorf("%s: host key changed: %w", machine, err)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: sshd not ready: %w (last attempt: %v)", machine, ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Reachable reports whether the named machine answers SSH within timeout.
func (l *Lab) Reachable(ctx context.Context, machine string, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := l.Output(ctx, machine, "true")
	return err == nil
}

// SSHArgs returns the OpenSSH command line that logs into the named machine
// as root with the lab key, checking its host key against the lab's
// known_hosts only; command, if given, runs instead of a login shell.
func (l *Lab) SSHArgs(machine string, command ...string) ([]string, error) {
	m, err := l.state.Machine(machine)
	if err != nil {
		return nil, err
	}
	args := []string{"ssh",
		"-i", l.IdentityPath(),
		"-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + l.KnownHostsPath(),
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "HostKeyAlgorithms=ssh-ed25519",
		"root@" + m.Address.String(),
	}
	if len(command) > 0 {
		args = append(args, "--")
		args = append(args, command...)
	}
	return args, nil
}
