package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
)

// SnapshotStatus is what etcd's own code reads from a snapshot file.
type SnapshotStatus struct {
	// Hash is etcd's hash of the database's buckets, keys and values
	// (etcdutl snapshot status's HASH).
	Hash      uint32 `json:"hash"`
	Revision  int64  `json:"revision"`
	TotalKeys int    `json:"total_keys"`
	TotalSize int64  `json:"total_size"`
	// Version is the storage version the snapshot records (etcd 3.6 and
	// later), empty before.
	Version string `json:"version,omitempty"`
	// SHA256 is the checksum the member appended to the stream, hex.
	SHA256 string `json:"sha256"`
}

// SaveSnapshot streams a snapshot from the member m answers for into a new
// file at path (mode 0600, refused if it exists), without holding it in
// memory, and syncs it. m must be a client with exactly one endpoint: a
// snapshot is one member's point-in-time state, and a balancer switching
// members mid-stream would splice two. It returns the member's etcd version.
// The file is the snapshot exactly as streamed, with etcd's SHA-256
// trailer; check it with CheckSnapshot before trusting it.
func SaveSnapshot(ctx context.Context, m clientv3.Maintenance, path string) (version string, err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	resp, err := m.SnapshotWithVersion(ctx)
	if err != nil {
		return "", fmt.Errorf("etcd snapshot: %w", err)
	}
	defer resp.Snapshot.Close()
	if _, err := io.Copy(f, resp.Snapshot); err != nil {
		return "", fmt.Errorf("etcd snapshot stream: %w", err)
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	return resp.Version, nil
}

// CheckSnapshot checks a snapshot file with etcd's own rules before anyone
// calls it a backup: its SHA-256 trailer must match the database (what
// etcdutl snapshot restore checks), and etcdutl's snapshot status must
// read the database through (bbolt's consistency check, every key) for
// the hash, revision and key count it returns.
func CheckSnapshot(path string) (st SnapshotStatus, err error) {
	f, err := os.Open(path)
	if err != nil {
		return st, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return st, err
	}
	// etcd appends the SHA-256 of the database to the stream and pads the
	// database to a multiple of 512 bytes: the same test as its restore.
	size := fi.Size()
	if size%512 != sha256.Size {
		return st, fmt.Errorf("%d bytes: not an etcd snapshot with its SHA-256 trailer (cut short?)", size)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, size-sha256.Size)); err != nil {
		return st, err
	}
	trailer := make([]byte, sha256.Size)
	if _, err := io.ReadFull(f, trailer); err != nil {
		return st, err
	}
	if !bytes.Equal(h.Sum(nil), trailer) {
		return st, errors.New("the database does not match etcd's SHA-256 trailer: the snapshot is damaged")
	}
	st.SHA256 = hex.EncodeToString(trailer)

	s, err := status(path)
	if err != nil {
		return st, fmt.Errorf("etcd snapshot status: %w", err)
	}
	st.Hash, st.Revision, st.TotalKeys, st.TotalSize, st.Version = s.Hash, s.Revision, s.TotalKey, s.TotalSize, s.Version
	return st, nil
}

// status is etcdutl's snapshot status. bbolt panics on some damaged
// pages instead of returning an error; a backup check must say the file
// is bad, not crash.
func status(path string) (s snapshot.Status, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the database is damaged: %v", r)
		}
	}()
	return snapshot.NewV3(zap.NewNop()).Status(path)
}
