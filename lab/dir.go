package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ErrNotLabDir is returned when a directory given as a lab's holds files
// but no lab state: it is someone else's directory, and the lab neither
// writes into it nor removes anything from it.
var ErrNotLabDir = errors.New("not a lab directory")

// labFiles are the top-level entries a lab makes in its directory. Down
// removes these and nothing else: `--dir` once pointed at a source folder,
// and removing the directory whole wiped it.
var labFiles = []string{
	stateFile, ".lock",
	IdentityFile, IdentityFile + ".pub",
	KnownHostsFile, InventoryFile,
	"machines",
}

// isLabEntry reports whether a top-level name in the lab directory is one
// the lab made, including atomicfile's temporary files for them
// (".NAME.tmp-*") that a crash may leave.
func isLabEntry(name string) bool {
	if slices.Contains(labFiles, name) {
		return true
	}
	for _, f := range labFiles {
		if strings.HasPrefix(name, "."+f+".tmp-") {
			return true
		}
	}
	return false
}

// checkLabDir refuses a directory that exists, holds something and has no
// lab state file. A missing or empty directory is fine: the lab may make it.
func checkLabDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("lab directory: %w", err)
	}
	if len(entries) == 0 {
		return nil
	}
	fi, err := os.Lstat(filepath.Join(dir, stateFile))
	if err == nil && fi.Mode().IsRegular() {
		return nil
	}
	return fmt.Errorf("%s holds %d entries and no %s: %w", dir, len(entries), stateFile, ErrNotLabDir)
}

// removeLabDir removes what the lab made in dir: its files, the machine
// disks, and the state kprov keeps for the lab's cluster beside the
// inventory the lab wrote (.kprov/NAME). Anything else stays, and so does
// dir when it is not empty afterwards; the names kept are returned. Nothing
// may be mounted under dir any more: a recursive removal would otherwise
// reach into a mounted file system.
func removeLabDir(dir, name string) (kept []string, err error) {
	mounts, err := mountsUnder(dir)
	if err != nil {
		return nil, err
	}
	if len(mounts) > 0 {
		return nil, fmt.Errorf("remove lab directory: still mounted under it: %s", strings.Join(mounts, ", "))
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("remove lab directory: %w", err)
	}
	var errs []error
	for _, e := range entries {
		switch {
		case isLabEntry(e.Name()):
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				errs = append(errs, err)
			}
		case e.Name() == ".kprov" && e.IsDir():
			// kprov apply keeps the cluster's state beside its inventory; the
			// lab's cluster is named after the lab and dies with its machines.
			clusterState := filepath.Join(dir, ".kprov", name)
			if err := os.RemoveAll(clusterState); err != nil {
				errs = append(errs, err)
			}
			if err := os.Remove(filepath.Join(dir, ".kprov")); err != nil {
				kept = append(kept, e.Name())
			}
		default:
			kept = append(kept, e.Name())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return kept, fmt.Errorf("remove lab directory: %w", err)
	}
	if len(kept) == 0 {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			return kept, fmt.Errorf("remove lab directory: %w", err)
		}
	}
	return kept, nil
}
