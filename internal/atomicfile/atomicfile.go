// Package atomicfile writes local files so that a reader sees the old
// content or the new, never half of it, and a secret never exists with a
// mode wider than the one asked for. It is the one place kprov writes a
// file on the operator's machine.
package atomicfile

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Write replaces path atomically: the data goes to a temporary file in the
// same directory (so the rename cannot cross file systems) whose mode is
// set before a byte is written, the file is fsynced and renamed over path,
// and the directory is fsynced so the rename survives a power loss. On any
// error path is untouched and the temporary file is removed.
func Write(path string, data []byte, mode fs.FileMode) error {
	return write(path, data, mode, true)
}

// Create is Write for a file that must not exist yet: an existing path is
// an error (fs.ErrExist), so two processes racing to create it cannot
// silently replace each other's file.
func Create(path string, data []byte, mode fs.FileMode) error {
	return write(path, data, mode, false)
}

// CreateFrom is Create for content too large to hold in memory (a backup
// with an etcd snapshot): fill writes it to the temporary file, and only
// when fill succeeds is the file synced and linked into place. A failed
// fill leaves nothing behind.
func CreateFrom(path string, mode fs.FileMode, fill func(io.Writer) error) error {
	return stream(path, mode, false, fill)
}

func write(path string, data []byte, mode fs.FileMode, replace bool) error {
	return stream(path, mode, replace, func(w io.Writer) error {
		_, err := io.Copy(w, bytes.NewReader(data))
		return err
	})
}

func stream(path string, mode fs.FileMode, replace bool, fill func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(mode); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err = fill(f); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if replace {
		err = os.Rename(tmp, path)
	} else if err = os.Link(tmp, path); err == nil { // a hard link fails when path exists, which rename would not
		err = os.Remove(tmp)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("%s: sync: %w", dir, err)
	}
	return nil
}
