package provision

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"github.com/kprov/kprov/internal/filehash"
	"github.com/kprov/kprov/provision/plan"
)

// RestoreDataArchive restores the step's snapshot (s.Source, checked
// against s.SHA256 first) into a new data directory on this machine with
// etcdutl's own code, as `etcdutl snapshot restore` with --name,
// --initial-cluster, --initial-cluster-token, --initial-advertise-peer-urls,
// --bump-revision plan.EtcdRestoreRevisionBump and --mark-compacted, and
// packs that directory's contents (member/) into a gzipped tar. It returns
// the archive, its SHA-256, and a cleanup that removes everything it made.
// The snapshot's own SHA-256 trailer is checked by etcdutl's code.
func RestoreDataArchive(s plan.Step) (archive, sum string, cleanup func(), err error) {
	if err := checkFileSHA256(s.Source, s.SHA256); err != nil {
		return "", "", func() {}, err
	}
	tmp, err := os.MkdirTemp("", "kprov-restore-")
	if err != nil {
		return "", "", func() {}, err
	}
	cleanup = func() { os.RemoveAll(tmp) }
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	data := filepath.Join(tmp, "data")
	if err := snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        s.Source,
		Name:                s.Member,
		OutputDataDir:       data,
		PeerURLs:            []string{s.PeerURL},
		InitialCluster:      s.InitialCluster,
		InitialClusterToken: s.ClusterToken,
		RevisionBump:        plan.EtcdRestoreRevisionBump,
		MarkCompacted:       true,
	}); err != nil {
		return "", "", cleanup, fmt.Errorf("etcdutl snapshot restore: %w", err)
	}
	archive = filepath.Join(tmp, "data.tar.gz")
	if sum, err = tarGzipDir(data, archive); err != nil {
		return "", "", cleanup, err
	}
	return archive, sum, cleanup, nil
}

// checkFileSHA256 refuses a file whose SHA-256 is not want.
func checkFileSHA256(path, want string) error {
	got, err := filehash.SHA256(path)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%s has sha256 %s, want %s: refusing to restore it", path, got, want)
	}
	return nil
}

// tarGzipDir writes the directories and regular files under dir (paths
// relative to it) into a gzipped tar at out and returns its SHA-256.
func tarGzipDir(dir, out string) (string, error) {
	f, err := os.OpenFile(out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	zw := gzip.NewWriter(io.MultiWriter(f, h))
	tw := tar.NewWriter(zw)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if !info.Mode().IsDir() && !info.Mode().IsRegular() {
			return fmt.Errorf("%s: not a file or directory", p)
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			defer src.Close()
			if _, err := io.Copy(tw, src); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("pack the restored data directory: %w", err)
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
