package pki

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/kprov/kprov/internal/atomicfile"
)

// Modes of what kprov writes into the state directory.
const (
	dirMode    fs.FileMode = 0o700 // the directory holds CA keys: only the operator may list or enter it
	keyMode    fs.FileMode = 0o600 // private keys and secrets
	publicMode fs.FileMode = 0o644 // certificates and public keys
)

// ErrInsecureMode is wrapped by every error about a key, secret or directory whose mode lets other users in.
var ErrInsecureMode = errors.New("permissions too open")

// ensureDir creates dir (and its parents) with mode 0700 and refuses an
// existing directory that group or others may use, since whoever can write
// it can replace a CA certificate together with its key.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	return checkDir(dir)
}

// checkDir refuses a state directory with any group or other permission bits.
func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: not a directory: move it away, kprov keeps its state in a directory there", dir)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s: mode %04o lets other users read or replace the cluster's keys (%w): run chmod 700 %s",
			dir, perm, ErrInsecureMode, dir)
	}
	return nil
}

// readFile reads a regular file from the state directory. For a secret it
// refuses a mode wider than 0600: the key may already have been read by
// someone else, which the operator must decide about, so kprov neither
// uses nor silently repairs it. The mode is taken from the opened file so
// the check and the read see the same file.
func readFile(path string, secret bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file: replace it with the file from your backup of the state directory", path)
	}
	if perm := fi.Mode().Perm(); secret && perm&0o077 != 0 {
		return nil, fmt.Errorf("%s: mode %04o is wider than 0600 (%w): check who could read it, then run chmod 600 %s",
			path, perm, ErrInsecureMode, path)
	}
	return io.ReadAll(f)
}

// writeFile replaces path atomically (atomicfile.Write), or with replace
// false creates it and fails with fs.ErrExist when it exists: CAs are
// written that way, so two kprov runs racing on a fresh state directory
// cannot silently replace each other's CA.
func writeFile(path string, data []byte, mode fs.FileMode, replace bool) error {
	if replace {
		return atomicfile.Write(path, data, mode)
	}
	return atomicfile.Create(path, data, mode)
}

// exists reports whether path exists, treating any error other than "not found" as existing so it is reported when read.
func exists(path string) bool {
	_, err := os.Lstat(path)
	return !errors.Is(err, fs.ErrNotExist)
}
