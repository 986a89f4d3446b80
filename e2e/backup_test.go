//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/kprov/kprov/lab"
)

// backupJSON is what kprov backup --json and backup verify --json print,
// as far as the test reads it.
type backupJSON struct {
	Path      string `json:"path"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"`
	Encrypted bool   `json:"encrypted"`
	Valid     bool   `json:"valid"`
	Error     string `json:"error"`
	Manifest  struct {
		Cluster   string `json:"cluster"`
		EtcdMode  string `json:"etcd_mode"`
		Source    string `json:"source"`
		Revision  int64  `json:"revision"`
		TotalKeys int    `json:"total_keys"`
		Members   []struct {
			Name string `json:"name"`
		} `json:"members"`
		Parts []struct {
			Name string `json:"name"`
		} `json:"parts"`
	} `json:"manifest"`
}

// kprovJSON runs kprov and decodes its stdout; stderr comes back apart.
func kprovJSON(t *testing.T, args ...string) (backupJSON, string, error) {
	t.Helper()
	cmd := exec.Command(kprovBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var out backupJSON
	if stdout.Len() > 0 {
		if jerr := json.Unmarshal(stdout.Bytes(), &out); jerr != nil {
			t.Fatalf("kprov %s: stdout is not JSON: %v\n%s\nstderr:\n%s", strings.Join(args, " "), jerr, stdout.String(), stderr.String())
		}
	}
	return out, stderr.String(), err
}

// TestBackup applies the ha-external lab (3 etcd hosts), writes 1,000 keys
// with etcd's client, and takes kprov backups:
//
//   - kprov backup writes one 0600 file whose manifest holds every key at
//     a revision at or past the last write, and kprov backup verify reads
//     back the same revision, key count and file checksum;
//   - an age-encrypted backup to the default path (STATE_DIR/backups)
//     verifies with the identity and is refused without it;
//   - one flipped byte is refused, naming the part;
//   - with etcd-1's machine stopped the backup comes from another member;
//   - with every etcd machine stopped it exits 1 naming each of them.
//
// TestRestoreExternalEtcd restores from such a backup onto new machines.
func TestBackup(t *testing.T) {
	runsBeside(t, true)
	specs, err := lab.TopologyMachines("ha-external")
	if err != nil {
		t.Fatal(err)
	}
	l := UpLab(t, specs)
	inv := l.InventoryPath()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := kprovErr(t, "-f", inv, "apply", "--auto-approve")
	assertApplied(t, out, err)
	t.Logf("apply took %s", time.Since(start).Round(time.Second))

	cli := etcdClient(t, ctx, l, inv)
	defer cli.Close()
	const keys = 1000
	for i := range keys {
		if _, err := cli.Put(ctx, fmt.Sprintf("/kprov-e2e/backup/%04d", i), fmt.Sprintf("value-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	written, err := cli.Get(ctx, "/kprov-e2e/backup/0000")
	if err != nil {
		t.Fatal(err)
	}

	// 1. A plain backup, and verify reads it back the same.
	dir := t.TempDir()
	file := filepath.Join(dir, "lab.kprov-backup")
	start = time.Now()
	b, stderr, err := kprovJSON(t, "-f", inv, "backup", "-o", file, "--json")
	took := time.Since(start)
	if err != nil {
		t.Fatalf("backup: %v\n%s", err, stderr)
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("backup took %s: %d bytes, revision %d, %d keys, from %s", took.Round(time.Millisecond), fi.Size(), b.Manifest.Revision, b.Manifest.TotalKeys, b.Manifest.Source)
	if fi.Mode().Perm() != 0o600 || fi.Size() != b.Size || b.Path != file || b.Encrypted {
		t.Errorf("backup file: mode %o, %d bytes; printed %+v", fi.Mode().Perm(), fi.Size(), b)
	}
	m := b.Manifest
	if m.Cluster != l.Name() || m.EtcdMode != "external" || m.TotalKeys < keys || m.Revision < written.Header.Revision || len(m.Members) != 3 {
		t.Errorf("manifest %+v; want cluster %s, ≥ %d keys at revision ≥ %d, 3 members", m, l.Name(), keys, written.Header.Revision)
	}
	hasState := false
	for _, p := range m.Parts {
		hasState = hasState || p.Name == "state/pki/etcd/ca.key"
		if strings.HasPrefix(p.Name, "state/backups/") {
			t.Errorf("the backup holds %s", p.Name)
		}
	}
	if !hasState {
		t.Errorf("no etcd CA key among the parts: %+v", m.Parts)
	}
	start = time.Now()
	v, stderr, err := kprovJSON(t, "backup", "verify", file, "--json")
	t.Logf("verify took %s", time.Since(start).Round(time.Millisecond))
	if err != nil || !v.Valid {
		t.Fatalf("verify: %v %+v\n%s", err, v, stderr)
	}
	if v.Manifest.Revision != m.Revision || v.Manifest.TotalKeys != m.TotalKeys || v.SHA256 != b.SHA256 {
		t.Errorf("verify read revision %d, %d keys, sha256 %s; backup wrote %d, %d, %s", v.Manifest.Revision, v.Manifest.TotalKeys, v.SHA256, m.Revision, m.TotalKeys, b.SHA256)
	}
	text := kprov(t, "backup", "verify", file)
	if !strings.Contains(text, "Backup OK: "+file) || !strings.Contains(text, fmt.Sprintf("revision %d, %d keys", m.Revision, m.TotalKeys)) {
		t.Errorf("verify:\n%s", text)
	}

	// 2. Encrypted, to the default path.
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(dir, "identity.txt")
	if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	enc, stderr, err := kprovJSON(t, "-f", inv, "backup", "--encrypt-to", id.Recipient().String(), "--json")
	if err != nil {
		t.Fatalf("encrypted backup: %v\n%s", err, stderr)
	}
	backups := filepath.Join(filepath.Dir(inv), ".kprov", l.Name(), "backups")
	if filepath.Dir(enc.Path) != backups || !strings.HasPrefix(filepath.Base(enc.Path), l.Name()+"-") || !strings.HasSuffix(enc.Path, ".kprov-backup") || !enc.Encrypted {
		t.Errorf("encrypted backup at %s (encrypted %v), want %s/%s-TIME.kprov-backup", enc.Path, enc.Encrypted, backups, l.Name())
	}
	if data, err := os.ReadFile(enc.Path); err != nil || bytes.Contains(data, []byte("manifest.json")) {
		t.Errorf("the encrypted file shows its manifest (%v)", err)
	}
	if v, stderr, err := kprovJSON(t, "backup", "verify", enc.Path, "--identity", idFile, "--json"); err != nil || !v.Valid || !v.Encrypted || v.Manifest.TotalKeys < keys {
		t.Errorf("verify the encrypted backup: %v %+v\n%s", err, v, stderr)
	}
	if out, err := kprovErr(t, "backup", "verify", enc.Path); exitCode(err) != 1 || !strings.Contains(out, "--identity") {
		t.Errorf("verify without the identity: %v\n%s", err, out)
	}

	// 3. One flipped byte in the snapshot, and the file cut short: refused,
	// naming what failed.
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(data)
	flipped[len(data)/2] ^= 0x01
	for want, content := range map[string][]byte{"snapshot.db: SHA-256": flipped, "use another backup": data[:len(data)-1000]} {
		bad := filepath.Join(dir, "bad.kprov-backup")
		if err := os.WriteFile(bad, content, 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := kprovErr(t, "backup", "verify", bad); exitCode(err) != 1 || !strings.Contains(out, want) {
			t.Errorf("verify a damaged backup: %v, want %q\n%s", err, want, out)
		}
	}

	// 4. etcd-1's machine stopped: the backup comes from another member.
	if err := l.Stop(ctx, "etcd-1", 0); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	one, stderr, err := kprovJSON(t, "-f", inv, "backup", "-o", filepath.Join(dir, "one-down.kprov-backup"), "--json")
	t.Logf("backup with etcd-1 down took %s", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("backup with etcd-1 stopped: %v\n%s", err, stderr)
	}
	if one.Manifest.Source == "etcd-1" || one.Manifest.Source == "" || one.Manifest.TotalKeys < keys {
		t.Errorf("backup with etcd-1 stopped: from %q, %d keys", one.Manifest.Source, one.Manifest.TotalKeys)
	}

	// 5. Every etcd machine stopped: exit 1, each one named.
	for _, name := range []string{"etcd-2", "etcd-3"} {
		if err := l.Stop(ctx, name, 0); err != nil {
			t.Fatal(err)
		}
	}
	none := filepath.Join(dir, "none.kprov-backup")
	start = time.Now()
	out, err = kprovErr(t, "-f", inv, "backup", "-o", none)
	t.Logf("backup with every etcd machine down took %s:\n%s", time.Since(start).Round(time.Millisecond), out)
	if exitCode(err) != 1 || !strings.Contains(out, "no healthy etcd voting member") {
		t.Errorf("backup with etcd down: %v\n%s", err, out)
	}
	for _, name := range []string{"etcd-1", "etcd-2", "etcd-3"} {
		if !strings.Contains(out, "\n"+name+" (https://") {
			t.Errorf("the error does not name %s:\n%s", name, out)
		}
	}
	if _, err := os.Stat(none); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed backup left %s: %v", none, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}
