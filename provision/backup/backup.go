// Package backup is the kprov backup file: an etcd snapshot, the cluster's
// state directory and the inventory, with a manifest that lists every part
// with its SHA-256, in one tar archive, optionally encrypted with age.
//
// The layout, in this order:
//
//	manifest.json          the Manifest
//	manifest.json.sha256   the manifest's SHA-256, hex, so a flipped byte in
//	                       it is named as the manifest's and not mistaken for
//	                       a damaged part
//	snapshot.db            the etcd snapshot as the member streamed it (with
//	                       etcd's own SHA-256 trailer, which restore checks)
//	inventory/NAME         the inventory file the backup was taken with
//	state/PATH             every file of the state directory but its backups
//	32 bytes               SHA-256 of everything before them
//
// The trailing checksum covers what the per-part checksums cannot: tar
// headers, the padding between entries and the end of the archive, so a
// flipped byte anywhere in the file is refused. Open checks all of it and
// the snapshot's integrity before it hands out a single part, so a restore
// built on it never starts from a damaged backup.
package backup

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"filippo.io/age"
	"filippo.io/age/armor"
)

// FormatVersion is the manifest's format; Open refuses any other.
const FormatVersion = 1

// Names of the fixed entries, and the prefixes of the others.
const (
	ManifestName    = "manifest.json"
	manifestSumName = "manifest.json.sha256"
	SnapshotName    = "snapshot.db"
	InventoryPrefix = "inventory/"
	StatePrefix     = "state/"
)

// maxManifest bounds the manifest Open reads into memory: a damaged size
// field must not make it allocate gigabytes.
const maxManifest = 4 << 20

// Manifest describes a backup: what cluster it is of, what the snapshot
// holds, and every part with its size and SHA-256.
type Manifest struct {
	Format            int    `json:"format"`
	Cluster           string `json:"cluster"`
	KubernetesVersion string `json:"kubernetes_version"`
	// EtcdVersion is the inventory's etcd version; EtcdStorageVersion is
	// the one the snapshot records (empty for etcd before 3.6).
	EtcdVersion        string   `json:"etcd_version"`
	EtcdStorageVersion string   `json:"etcd_storage_version,omitempty"`
	EtcdMode           string   `json:"etcd_mode"`
	Members            []Member `json:"members"`
	// Source is the member the snapshot was streamed from.
	Source    string `json:"source"`
	Revision  int64  `json:"revision"`
	TotalKeys int    `json:"total_keys"`
	// SnapshotHash is etcd's hash of the snapshot's contents (as etcdutl
	// snapshot status prints it), checked again by Open.
	SnapshotHash uint32    `json:"snapshot_hash"`
	Time         time.Time `json:"time"`
	KprovVersion string    `json:"kprov_version"`
	Parts        []Part    `json:"parts"`
}

// Member is one etcd member as the member list showed it when the backup
// was taken.
type Member struct {
	ID       string   `json:"id"` // hex, as etcdctl prints it
	Name     string   `json:"name"`
	PeerURLs []string `json:"peer_urls"`
	Learner  bool     `json:"learner,omitempty"`
}

// Part is one file in the backup.
type Part struct {
	Name   string      `json:"name"`
	Size   int64       `json:"size"`
	Mode   fs.FileMode `json:"mode"`
	SHA256 string      `json:"sha256"`
}

// CheckCluster refuses a backup of another cluster: restoring it would put
// that cluster's CAs and data behind this inventory's name.
func (m *Manifest) CheckCluster(name string) error {
	if m.Cluster != name {
		return fmt.Errorf("the backup is of cluster %q, not %q: use a backup of %q, or the inventory of %q", m.Cluster, name, name, m.Cluster)
	}
	return nil
}

// Part returns the part with the given name.
func (m *Manifest) Part(name string) (Part, bool) {
	for _, p := range m.Parts {
		if p.Name == name {
			return p, true
		}
	}
	return Part{}, false
}

// PartError says which part of a backup failed its check.
type PartError struct {
	Part string
	Err  error
}

func (e *PartError) Error() string { return e.Part + ": " + e.Err.Error() }
func (e *PartError) Unwrap() error { return e.Err }

// ErrEncrypted is returned by Open for an encrypted backup when no
// identity was given.
var ErrEncrypted = errors.New("the backup is encrypted with age: give the identity file it was encrypted to (--identity)")

// Source is a local file to put in a backup under Name.
type Source struct {
	Name string
	Path string
}

// Write writes a backup of m and the sources to w and returns m with its
// Parts filled in. Each source is hashed first (the manifest comes before
// the parts) and hashed again as it is copied: a file that changed in
// between is an error, never a backup whose manifest lies.
func Write(w io.Writer, m Manifest, sources []Source) (Manifest, error) {
	m.Format = FormatVersion
	m.Parts = nil
	seen := map[string]bool{}
	for _, s := range sources {
		if err := checkName(s.Name); err != nil {
			return m, err
		}
		if seen[s.Name] {
			return m, fmt.Errorf("%s: two sources for one part", s.Name)
		}
		seen[s.Name] = true
		p, err := hashFile(s)
		if err != nil {
			return m, err
		}
		m.Parts = append(m.Parts, p)
	}
	manifest, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return m, err
	}
	sum := sha256.Sum256(manifest)

	whole := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(w, whole))
	if err := writeEntry(tw, ManifestName, 0o600, manifest); err != nil {
		return m, err
	}
	if err := writeEntry(tw, manifestSumName, 0o600, []byte(hex.EncodeToString(sum[:])+"\n")); err != nil {
		return m, err
	}
	for i, s := range sources {
		if err := copyPart(tw, s, m.Parts[i]); err != nil {
			return m, err
		}
	}
	if err := tw.Close(); err != nil {
		return m, err
	}
	if _, err := w.Write(whole.Sum(nil)); err != nil {
		return m, err
	}
	return m, nil
}

// checkName accepts the part names Open extracts: the snapshot, and
// relative, clean paths under inventory/ or state/.
func checkName(name string) error {
	if name == SnapshotName {
		return nil
	}
	if !strings.HasPrefix(name, InventoryPrefix) && !strings.HasPrefix(name, StatePrefix) {
		return fmt.Errorf("part %q: not %s, nor under %s or %s", name, SnapshotName, InventoryPrefix, StatePrefix)
	}
	if !filepath.IsLocal(name) || path.Clean(name) != name {
		return fmt.Errorf("part %q: not a clean relative path", name)
	}
	return nil
}

func hashFile(s Source) (Part, error) {
	f, err := os.Open(s.Path)
	if err != nil {
		return Part{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Part{}, err
	}
	if !st.Mode().IsRegular() {
		return Part{}, fmt.Errorf("%s: not a regular file", s.Path)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return Part{}, fmt.Errorf("%s: %w", s.Path, err)
	}
	return Part{Name: s.Name, Size: n, Mode: st.Mode().Perm(), SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

func writeEntry(tw *tar.Writer, name string, mode fs.FileMode, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: int64(mode), Size: int64(len(data)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

func copyPart(tw *tar.Writer, s Source, p Part) error {
	f, err := os.Open(s.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := tw.WriteHeader(&tar.Header{Name: p.Name, Mode: int64(p.Mode), Size: p.Size, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return fmt.Errorf("%s: %w", p.Name, err)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tw, h), io.LimitReader(f, p.Size))
	if err != nil {
		return fmt.Errorf("%s: %w", s.Path, err)
	}
	if n != p.Size || hex.EncodeToString(h.Sum(nil)) != p.SHA256 {
		return fmt.Errorf("%s changed while the backup was written: run the backup again", s.Path)
	}
	return nil
}

// Options are how Open reads a backup.
type Options struct {
	// Identities decrypt an encrypted backup; without one, an encrypted
	// backup is ErrEncrypted.
	Identities []age.Identity
	// TempDir is where the parts are extracted; os.TempDir() when empty.
	TempDir string
}

// Backup is an opened and fully verified backup: its manifest, and its
// parts extracted into a private temporary directory until Close.
type Backup struct {
	Manifest  Manifest
	Encrypted bool
	// Snapshot is etcd's view of the snapshot, checked against the manifest.
	Snapshot SnapshotStatus
	dir      string
}

// SnapshotPath is the extracted snapshot, as etcdutl snapshot restore takes
// it (with etcd's SHA-256 trailer).
func (b *Backup) SnapshotPath() string { return filepath.Join(b.dir, SnapshotName) }

// OpenPart opens an extracted part by its name in the manifest.
func (b *Backup) OpenPart(name string) (io.ReadCloser, error) {
	if _, ok := b.Manifest.Part(name); !ok {
		return nil, fmt.Errorf("the backup has no part %q", name)
	}
	return os.Open(filepath.Join(b.dir, filepath.FromSlash(name)))
}

// StateParts are the state directory's files, named as under state/.
func (b *Backup) StateParts() []Part {
	var out []Part
	for _, p := range b.Manifest.Parts {
		if strings.HasPrefix(p.Name, StatePrefix) {
			out = append(out, p)
		}
	}
	return out
}

// Close removes the extracted parts.
func (b *Backup) Close() error { return os.RemoveAll(b.dir) }

// OpenFile is Open on a file, with the file's name in every error.
func OpenFile(file string, opts Options) (*Backup, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := Open(f, opts)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", file, err)
	}
	return b, nil
}

// ageMagic starts every binary age file, ageArmor every armored one.
const (
	ageMagic = "age-encryption.org/"
	ageArmor = armor.Header
)

// Open reads a backup from r, decrypting it when it is age-encrypted, and
// checks all of it before returning: the manifest's own checksum, every
// part's size and SHA-256, that no part is missing or extra, the file's
// trailing checksum, and the snapshot's integrity by etcd's own code (its
// SHA-256 trailer, its database, its hash, revision and key count as the
// manifest records them). Any failure is an error naming the part
// (*PartError) and nothing is left on disk.
func Open(r io.Reader, opts Options) (_ *Backup, err error) {
	br := bufio.NewReader(r)
	b := &Backup{}
	head, _ := br.Peek(len(ageArmor))
	if bytes.HasPrefix(head, []byte(ageMagic)) || bytes.Equal(head, []byte(ageArmor)) {
		b.Encrypted = true
		if len(opts.Identities) == 0 {
			return nil, ErrEncrypted
		}
		var src io.Reader = br
		if bytes.Equal(head, []byte(ageArmor)) {
			src = armor.NewReader(br)
		}
		dr, err := age.Decrypt(src, opts.Identities...)
		if err != nil {
			var nomatch *age.NoIdentityMatchError
			if errors.As(err, &nomatch) {
				return nil, fmt.Errorf("no identity given matches the recipients the backup was encrypted to: give the right --identity")
			}
			return nil, fmt.Errorf("decrypt: %w", err)
		}
		br = bufio.NewReader(dr)
	}
	if b.dir, err = os.MkdirTemp(opts.TempDir, "kprov-backup-*"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(b.dir)
		}
	}()
	tail := &holdback{r: br, n: sha256.Size, h: sha256.New()}
	if err := b.extract(tar.NewReader(tail)); err != nil {
		return nil, err
	}
	// Read past the end of the archive so the trailer is all that is held back.
	if _, err := io.Copy(io.Discard, tail); err != nil {
		return nil, readErr("the end of the archive", err)
	}
	if len(tail.buf) != sha256.Size {
		return nil, &PartError{Part: "the file's checksum", Err: errors.New("missing: the file is truncated")}
	}
	if !bytes.Equal(tail.h.Sum(nil), tail.buf) {
		return nil, &PartError{Part: "the archive", Err: errors.New("its SHA-256 does not match the file's trailing checksum (a tar header or padding is damaged, or the file was cut short): use another backup")}
	}
	st, err := CheckSnapshot(b.SnapshotPath())
	if err != nil {
		return nil, &PartError{Part: SnapshotName, Err: err}
	}
	m := b.Manifest
	if st.Hash != m.SnapshotHash || st.Revision != m.Revision || st.TotalKeys != m.TotalKeys {
		return nil, &PartError{Part: SnapshotName, Err: fmt.Errorf("etcd reads hash %08x, revision %d, %d keys; the manifest says %08x, %d, %d",
			st.Hash, st.Revision, st.TotalKeys, m.SnapshotHash, m.Revision, m.TotalKeys)}
	}
	b.Snapshot = st
	return b, nil
}

// extract reads the manifest and its checksum, then every part into b.dir,
// checking each against the manifest as it goes.
func (b *Backup) extract(tr *tar.Reader) error {
	manifest, err := readSmall(tr, ManifestName)
	if err != nil {
		var pe *PartError
		if errors.As(err, &pe) {
			pe.Err = fmt.Errorf("not a kprov backup, or a damaged one: %w", pe.Err)
		}
		return err
	}
	sum, err := readSmall(tr, manifestSumName)
	if err != nil {
		return err
	}
	got := sha256.Sum256(manifest)
	if strings.TrimSpace(string(sum)) != hex.EncodeToString(got[:]) {
		return &PartError{Part: ManifestName, Err: errors.New("its SHA-256 does not match the one recorded beside it: the manifest is damaged; use another backup")}
	}
	m := &b.Manifest
	if err := json.Unmarshal(manifest, m); err != nil {
		return &PartError{Part: ManifestName, Err: err}
	}
	if m.Format != FormatVersion {
		return &PartError{Part: ManifestName, Err: fmt.Errorf("format %d; this kprov reads format %d", m.Format, FormatVersion)}
	}
	if _, ok := m.Part(SnapshotName); !ok {
		return &PartError{Part: ManifestName, Err: errors.New("lists no etcd snapshot")}
	}
	for _, want := range m.Parts {
		if err := checkName(want.Name); err != nil {
			return &PartError{Part: ManifestName, Err: err}
		}
		hdr, err := tr.Next()
		if err != nil {
			return readErr(want.Name, err)
		}
		if hdr.Name != want.Name {
			return &PartError{Part: want.Name, Err: fmt.Errorf("found %q in its place", hdr.Name)}
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Size != want.Size {
			return &PartError{Part: want.Name, Err: fmt.Errorf("%d bytes; the manifest says %d", hdr.Size, want.Size)}
		}
		if err := b.extractPart(tr, want); err != nil {
			return err
		}
	}
	if hdr, err := tr.Next(); err != io.EOF {
		if err != nil {
			return readErr("the end of the archive", err)
		}
		return &PartError{Part: hdr.Name, Err: errors.New("not in the manifest")}
	}
	return nil
}

func (b *Backup) extractPart(tr *tar.Reader, want Part) error {
	dst := filepath.Join(b.dir, filepath.FromSlash(want.Name))
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, h), tr)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return readErr(want.Name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want.SHA256 {
		return &PartError{Part: want.Name, Err: fmt.Errorf("SHA-256 %s; the manifest says %s: the part is damaged; use another backup", got, want.SHA256)}
	}
	return nil
}

func readSmall(tr *tar.Reader, name string) ([]byte, error) {
	hdr, err := tr.Next()
	if err != nil {
		return nil, readErr(name, err)
	}
	if hdr.Name != name {
		return nil, &PartError{Part: name, Err: fmt.Errorf("found %q in its place: not a kprov backup, or a damaged one", hdr.Name)}
	}
	if hdr.Size > maxManifest {
		return nil, &PartError{Part: name, Err: fmt.Errorf("%d bytes, more than a manifest can be", hdr.Size)}
	}
	data, err := io.ReadAll(tr)
	if err != nil {
		return nil, readErr(name, err)
	}
	return data, nil
}

// readErr names the part being read when the file ended or the archive
// could not be read (a damaged header, a truncated or undecryptable file).
func readErr(part string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &PartError{Part: part, Err: errors.New("the file ends before it: it is truncated; use another backup")}
	}
	return &PartError{Part: part, Err: fmt.Errorf("unreadable: %w", err)}
}

// holdback passes everything read from r through h except the last n
// bytes, which it keeps in buf: the trailer is read along with the archive
// without knowing in advance where the archive ends.
type holdback struct {
	r   io.Reader
	n   int
	h   hash.Hash
	buf []byte
	eof bool
}

func (t *holdback) Read(p []byte) (int, error) {
	// Fill the buffer to n + len(p) so up to len(p) bytes can be released
	// while n stay behind.
	need := t.n + len(p)
	for len(t.buf) < need && !t.eof {
		t.buf = slices.Grow(t.buf, need-len(t.buf))
		k, err := t.r.Read(t.buf[len(t.buf):need])
		t.buf = t.buf[:len(t.buf)+k]
		switch {
		case err == io.EOF:
			t.eof = true
		case err != nil:
			return 0, err
		}
	}
	avail := len(t.buf) - t.n
	if avail <= 0 {
		return 0, io.EOF
	}
	k := copy(p, t.buf[:avail])
	t.h.Write(p[:k])
	t.buf = append(t.buf[:0], t.buf[k:]...)
	return k, nil
}
