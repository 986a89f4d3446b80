package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"filippo.io/age"
	"github.com/spf13/cobra"

	"github.com/kprov/kprov/internal/atomicfile"
	"github.com/kprov/kprov/provision"
	"github.com/kprov/kprov/provision/backup"
	"github.com/kprov/kprov/provision/ssh"
)

func init() { commands = append(commands, newBackupCmd) }

// backupsDir is the state directory's subdirectory for backups; a backup
// never includes it, or each one would hold all the ones before it.
const backupsDir = "backups"

// backupResult is what kprov backup prints with --json.
type backupResult struct {
	Path      string          `json:"path"`
	Size      int64           `json:"size"`
	SHA256    string          `json:"sha256"`
	Encrypted bool            `json:"encrypted"`
	Manifest  backup.Manifest `json:"manifest"`
}

func newBackupCmd(g *globalOptions) *cobra.Command {
	var out, encryptTo string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Write one file with an etcd snapshot, the state directory (CAs, keys) and the inventory",
		Long: `backup takes an etcd snapshot from one healthy voting member, through an SSH
tunnel to its host with kprov's etcd client certificate, checks it with
etcd's own code (SHA-256, database, hash, revision, key count), and writes
one file (mode 0600) holding the snapshot, every file of the state directory
(certificate authorities and their keys, service-account keys, join
secrets; not its backups directory) and the inventory, with a manifest that
lists the SHA-256 of every part.

The file goes to -o, by default STATE_DIR/backups/CLUSTER-UTCTIME.kprov-backup;
an existing file is never replaced. With --encrypt-to the whole file is
encrypted with age to that recipient; keep the identity somewhere the
disaster cannot reach. The backup holds the cluster's CA keys: whoever reads
it can impersonate anything in the cluster.

It exits 1, naming each member tried and why, when no healthy member gives
a snapshot. Check a backup again any time with kprov backup verify.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var recipients []age.Recipient
			if encryptTo != "" {
				r, err := age.ParseRecipients(strings.NewReader(encryptTo))
				if err != nil {
					return usageError("--encrypt-to: not an age recipient (age1...): %v", err)
				}
				recipients = r
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			c, err := g.loadCluster()
			if err != nil {
				return err
			}
			now := time.Now().UTC()
			if out == "" {
				dir := filepath.Join(c.Inventory.Cluster.StateDir, backupsDir)
				if err := os.MkdirAll(dir, 0o700); err != nil {
					return err
				}
				out = filepath.Join(dir, fmt.Sprintf("%s-%s.kprov-backup", c.Inventory.Cluster.Name, now.Format("20060102T150405Z")))
			}
			if _, err := os.Lstat(out); err == nil {
				return fmt.Errorf("%s exists: kprov never replaces a backup; give another -o", out)
			}
			// The snapshot streams to a private directory beside the
			// output, so the final file is assembled on the same file system
			// and nothing is held in memory.
			tmp, err := os.MkdirTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
			if err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			defer os.RemoveAll(tmp)

			p, pool := g.pipeline(c, ssh.DefaultParallel, nil)
			defer pool.Close()
			snap, err := p.EtcdSnapshot(ctx, filepath.Join(tmp, backup.SnapshotName))
			if err != nil {
				return &exitCodeError{code: exitError, err: err}
			}
			res, err := writeBackup(c, snap, filepath.Join(tmp, backup.SnapshotName), out, tmp, recipients, now)
			if err != nil {
				return &exitCodeError{code: exitError, err: err}
			}
			if asJSON {
				return writeJSON(g.stdout, res)
			}
			writeBackupSummary(g.stdout, res)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write the backup to `FILE` (default STATE_DIR/backups/CLUSTER-UTCTIME.kprov-backup)")
	cmd.Flags().StringVar(&encryptTo, "encrypt-to", "", "encrypt the whole file with age to `RECIPIENT` (age1...)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print path, size, sha256, encrypted and the manifest as JSON")
	cmd.AddCommand(newBackupVerifyCmd(g))
	return cmd
}

// writeBackup assembles the backup file from the checked snapshot, the
// inventory and the state directory, written under a temporary name and
// linked into place only when complete.
func writeBackup(c *provision.Cluster, snap *provision.EtcdSnapshot, snapPath, out, tmp string, recipients []age.Recipient, now time.Time) (*backupResult, error) {
	inv := c.Inventory
	sources := []backup.Source{
		{Name: backup.SnapshotName, Path: snapPath},
		{Name: backup.InventoryPrefix + filepath.Base(inv.Path), Path: inv.Path},
	}
	state, err := stateSources(inv.Cluster.StateDir, tmp)
	if err != nil {
		return nil, err
	}
	sources = append(sources, state...)
	m := backup.Manifest{
		Cluster:            inv.Cluster.Name,
		KubernetesVersion:  inv.Cluster.KubernetesVersion,
		EtcdVersion:        inv.Etcd.Version,
		EtcdStorageVersion: snap.Status.Version,
		EtcdMode:           string(inv.Topology.EtcdMode),
		Members:            snap.Members,
		Source:             snap.Member,
		Revision:           snap.Status.Revision,
		TotalKeys:          snap.Status.TotalKeys,
		SnapshotHash:       snap.Status.Hash,
		Time:               now,
		KprovVersion:       kprovVersion(),
	}
	res := &backupResult{Path: out, Encrypted: len(recipients) > 0}
	h := sha256.New()
	err = atomicfile.CreateFrom(out, 0o600, func(w io.Writer) error {
		cw := &countingWriter{w: io.MultiWriter(w, h)}
		var dst io.Writer = cw
		var enc io.WriteCloser
		if len(recipients) > 0 {
			if enc, err = age.Encrypt(cw, recipients...); err != nil {
				return err
			}
			dst = enc
		}
		if res.Manifest, err = backup.Write(dst, m, sources); err != nil {
			return err
		}
		if enc != nil {
			if err := enc.Close(); err != nil {
				return err
			}
		}
		res.Size = cw.n
		return nil
	})
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("%s appeared while the backup was written: kprov never replaces a backup; give another -o", out)
		}
		return nil, fmt.Errorf("write backup: %w", err)
	}
	res.SHA256 = hex.EncodeToString(h.Sum(nil))
	return res, nil
}

// stateSources lists every regular file of the state directory, but not
// its backups directory nor skip (the backup's own temporary directory).
// Anything that is not a regular file or a directory is an error: kprov
// writes only those there, and a symlink could pull in a file from
// anywhere.
func stateSources(stateDir, skip string) ([]backup.Source, error) {
	var out []backup.Source
	err := filepath.WalkDir(stateDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path == filepath.Join(stateDir, backupsDir) || path == skip {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s is not a regular file: remove it from the state directory, or move it elsewhere, then run kprov backup again", path)
		}
		rel, err := filepath.Rel(stateDir, path)
		if err != nil {
			return err
		}
		out = append(out, backup.Source{Name: backup.StatePrefix + filepath.ToSlash(rel), Path: path})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	return out, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func writeBackupSummary(w io.Writer, res *backupResult) {
	m := res.Manifest
	enc := "not encrypted"
	if res.Encrypted {
		enc = "encrypted with age"
	}
	fmt.Fprintf(w, "Backup written: %s\n", res.Path)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  size\t%d bytes, mode 0600, %s\n", res.Size, enc)
	fmt.Fprintf(tw, "  sha256\t%s\n", res.SHA256)
	writeManifestLines(tw, m)
	tw.Flush()
	fmt.Fprintf(w, "Check it any time with: kprov backup verify %s\n", res.Path)
}

// writeManifestLines prints the manifest's summary as tab-separated lines.
func writeManifestLines(tw io.Writer, m backup.Manifest) {
	fmt.Fprintf(tw, "  cluster\t%s (Kubernetes %s, %s etcd %s)\n", m.Cluster, m.KubernetesVersion, m.EtcdMode, m.EtcdVersion)
	fmt.Fprintf(tw, "  snapshot\trevision %d, %d keys, hash %08x, from member %s\n", m.Revision, m.TotalKeys, m.SnapshotHash, m.Source)
	var members []string
	for _, mb := range m.Members {
		s := mb.Name + " " + strings.Join(mb.PeerURLs, ",")
		if mb.Learner {
			s += " (learner)"
		}
		members = append(members, s)
	}
	fmt.Fprintf(tw, "  members\t%s\n", strings.Join(members, "; "))
	state := 0
	for _, p := range m.Parts {
		if strings.HasPrefix(p.Name, backup.StatePrefix) {
			state++
		}
	}
	fmt.Fprintf(tw, "  parts\t%d (the snapshot, the inventory, %d state directory files)\n", len(m.Parts), state)
	fmt.Fprintf(tw, "  taken\t%s by kprov %s\n", m.Time.UTC().Format(time.RFC3339), m.KprovVersion)
}

// verifyResult is what kprov backup verify prints with --json.
type verifyResult struct {
	File      string           `json:"file"`
	Valid     bool             `json:"valid"`
	Error     string           `json:"error,omitempty"`
	Encrypted bool             `json:"encrypted"`
	SHA256    string           `json:"sha256,omitempty"`
	Manifest  *backup.Manifest `json:"manifest,omitempty"`
}

func newBackupVerifyCmd(g *globalOptions) *cobra.Command {
	var identity string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify FILE",
		Short: "Check a backup offline: decryption, every part's SHA-256, the snapshot's integrity; print its manifest",
		Long: `verify reads a backup without touching any host: it decrypts it (with
--identity when it is encrypted), checks the manifest and every part against
their SHA-256, the file's own trailing checksum, and the etcd snapshot with
etcd's own code (its SHA-256, its database, and the hash, revision and key
count the manifest records), then prints the manifest.

It exits 1, naming the part that failed, for a damaged, truncated or
undecryptable backup.`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			res := &verifyResult{File: args[0]}
			err := verifyBackup(res, identity)
			if err != nil {
				res.Error = err.Error()
			}
			res.Valid = err == nil
			if asJSON {
				if jerr := writeJSON(g.stdout, res); jerr != nil {
					return jerr
				}
			} else if err == nil {
				writeVerifySummary(g.stdout, res)
			}
			if err != nil {
				return &exitCodeError{code: exitError, err: err}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&identity, "identity", "", "the age identity `FILE` to decrypt an encrypted backup with")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print file, valid, error, encrypted, sha256 and the manifest as JSON")
	return cmd
}

// backupOptions reads the age identity file given with --identity, if any.
func backupOptions(identity string) (backup.Options, error) {
	var opts backup.Options
	if identity == "" {
		return opts, nil
	}
	f, err := os.Open(identity)
	if err != nil {
		return opts, fmt.Errorf("--identity: %w", err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(f)
	if err != nil {
		return opts, fmt.Errorf("--identity %s: not an age identity file: %w", identity, err)
	}
	opts.Identities = ids
	return opts, nil
}

// verifyBackup opens and checks the backup, filling res.
func verifyBackup(res *verifyResult, identity string) error {
	opts, err := backupOptions(identity)
	if err != nil {
		return err
	}
	f, err := os.Open(res.File)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	b, err := backup.Open(io.TeeReader(f, h), opts)
	if err != nil {
		return fmt.Errorf("backup %s: %w", res.File, err)
	}
	defer b.Close()
	// Open stops at the trailer; hash what an encrypted file may hold after it.
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	res.Encrypted, res.Manifest, res.SHA256 = b.Encrypted, &b.Manifest, hex.EncodeToString(h.Sum(nil))
	return nil
}

func writeVerifySummary(w io.Writer, res *verifyResult) {
	enc := "not encrypted"
	if res.Encrypted {
		enc = "encrypted with age, decrypted"
	}
	fmt.Fprintf(w, "Backup OK: %s\n", res.File)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  file\t%s, sha256 %s\n", enc, res.SHA256)
	writeManifestLines(tw, *res.Manifest)
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PART\tSIZE\tMODE\tSHA256")
	for _, p := range res.Manifest.Parts {
		fmt.Fprintf(tw, "%s\t%d\t%04o\t%s\n", p.Name, p.Size, p.Mode, p.SHA256)
	}
	tw.Flush()
}
