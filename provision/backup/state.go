package backup

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/kprov/kprov/internal/atomicfile"
)

// caPart is the Kubernetes CA certificate under state/: it says which
// cluster a state directory belongs to, and it is written last when a
// state directory is restored, so its presence means the rest is there.
const caPart = "pki/ca.crt"

// StateSkip says why a backed-up state file is not carried into a
// restored state directory, or "" when it is. What is carried is what the
// cluster's identity rests on and the new hosts cannot change: the CAs and
// their keys, the service-account key pair, the client certificates (they
// name no host), so every kubeconfig, token and client certificate issued
// before the disaster still works. What is left out names or belongs to the
// old hosts, and kprov issues it anew for the new ones.
func StateSkip(rel string) string {
	switch {
	case strings.HasPrefix(rel, "pki/etcd/members/"):
		return "per-member etcd certificates name the old hosts and addresses; issued anew for the new members"
	case rel == "secrets.json":
		return "join secrets (bootstrap token, certificate key) are issued anew: the old ones lived in the old cluster"
	case rel == "admin.conf":
		return "the admin kubeconfig names the old API endpoint; fetched anew from the new first master"
	}
	return ""
}

// StateInstall is what InstallState did.
type StateInstall struct {
	// Written are the files written, relative to the state directory; empty
	// when the directory already held this backup's state (a second run).
	Written []string
	// Skipped maps each backed-up file left out to why (StateSkip).
	Skipped map[string]string
}

// ForeignCAError refuses to restore into a state directory that holds
// another cluster's CA: replacing it would orphan every credential that CA
// issued, and merging would mix two clusters' keys.
type ForeignCAError struct {
	Dir          string
	Have, Backup string // the two CA certificates, described
}

func (e *ForeignCAError) Error() string {
	return fmt.Sprintf("state directory %s holds another cluster's CA (%s; the backup's is %s): kprov never replaces a CA; move it away (mv %s %s.old) or give the inventory another state_dir, then run kprov restore again",
		e.Dir, e.Have, e.Backup, e.Dir, e.Dir)
}

// InstallState makes dir the restored cluster's state directory from the
// backup's state parts, leaving out what StateSkip names. A directory that
// already holds the backup's CA is left as it is (a second run); one that
// holds another CA is refused (*ForeignCAError); a file that exists with
// other content than the backup's is refused by name. Files are written
// atomically with the modes the backup recorded, the CA certificate last.
func (b *Backup) InstallState(dir string) (*StateInstall, error) {
	res := &StateInstall{Skipped: map[string]string{}}
	want, err := b.readState(caPart)
	if err != nil {
		return nil, err
	}
	have, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(caPart)))
	switch {
	case err == nil && bytes.Equal(have, want):
		for _, p := range b.StateParts() {
			rel := strings.TrimPrefix(p.Name, StatePrefix)
			if why := StateSkip(rel); why != "" {
				res.Skipped[rel] = why
			}
		}
		return res, nil
	case err == nil:
		return nil, &ForeignCAError{Dir: dir, Have: describeCert(have), Backup: describeCert(want)}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("state directory %s: %w", dir, err)
	}
	var caMode fs.FileMode = 0o644
	for _, p := range b.StateParts() {
		rel := strings.TrimPrefix(p.Name, StatePrefix)
		if why := StateSkip(rel); why != "" {
			res.Skipped[rel] = why
			continue
		}
		if rel == caPart {
			caMode = p.Mode.Perm()
			continue
		}
		data, err := b.readState(rel)
		if err != nil {
			return nil, err
		}
		if err := installFile(dir, rel, data, p.Mode.Perm()); err != nil {
			return nil, err
		}
		res.Written = append(res.Written, rel)
	}
	if err := installFile(dir, caPart, want, caMode); err != nil {
		return nil, err
	}
	res.Written = append(res.Written, caPart)
	return res, nil
}

// readState reads one extracted state part.
func (b *Backup) readState(rel string) ([]byte, error) {
	r, err := b.OpenPart(StatePrefix + rel)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// installFile writes one state file, leaving an identical one alone (an
// interrupted install run again) and refusing one with other content.
func installFile(dir, rel string, data []byte, mode fs.FileMode) error {
	path := filepath.Join(dir, filepath.FromSlash(rel))
	if have, err := os.ReadFile(path); err == nil {
		if bytes.Equal(have, data) {
			return nil
		}
		return fmt.Errorf("state directory %s: %s exists with other content than the backup's: move the state directory away (mv %s %s.old), then run kprov restore again", dir, rel, dir, dir)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("state directory %s: %w", dir, err)
	}
	if err := atomicfile.Create(path, data, mode); err != nil {
		return fmt.Errorf("state directory %s: %s: %w", dir, rel, err)
	}
	return nil
}

// describeCert names a CA certificate by subject, serial and expiry, or
// says it could not be read.
func describeCert(data []byte) string {
	blk, _ := pem.Decode(data)
	if blk == nil {
		return "an unreadable certificate"
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return "an unreadable certificate"
	}
	return fmt.Sprintf("CN %s, serial %x, valid until %s", c.Subject.CommonName, c.SerialNumber, c.NotAfter.UTC().Format("2006-01-02"))
}
