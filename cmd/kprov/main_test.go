package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/crypto/ssh"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"kprov": func() { os.Exit(Main()) },
	})
}

// TestScripts runs the CLI scripts in testdata/script: each command's output is reviewable text.
//
// Each script gets a home with an SSH key (~/.ssh/id_ed25519, made for the
// run) and $CLOSED_PORT, a port on 127.0.0.1 nothing listens on: an
// inventory whose hosts are there shows what kprov does with hosts that do
// not answer, without a lab and without sending a packet off this machine.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "../../testdata/script",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			home := env.WorkDir + "/home"
			env.Setenv("HOME", home)
			env.Setenv("SSH_AUTH_SOCK", "")
			if err := writeTestKey(filepath.Join(home, ".ssh", "id_ed25519")); err != nil {
				return err
			}
			port, err := closedPort()
			if err != nil {
				return err
			}
			env.Setenv("CLOSED_PORT", strconv.Itoa(port))
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exitcode": exitCodeCmd,
		},
	})
}

// exitCodeCmd is `exitcode N COMMAND [ARGS...]`: it runs the command like
// exec and fails unless it exits with status N. Scripts rely on kprov's
// exit codes, so the scripts check them exactly.
func exitCodeCmd(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exitcode N command [args...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exitcode %q: not a number", args[0])
	}
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			ts.Fatalf("%s: %v", args[1], err)
		}
		got = exit.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited %d, want %d", args[1], got, want)
	}
}

// writeTestKey writes a fresh ed25519 private key, readable by its owner
// alone as kprov requires.
func writeTestKey(path string) error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	block, err := ssh.MarshalPrivateKey(priv, "kprov testscript")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(block), 0o600)
}

// closedPort finds a port on 127.0.0.1 that nothing listens on: one the
// kernel just handed out and that was closed again.
func closedPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}
