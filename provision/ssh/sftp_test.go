package ssh

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// uploadServer is a fake host that lets the upload path run its stat and
// chown commands for real against files under dir.
func uploadServer(t *testing.T, target string) (*fakeServer, *Client) {
	t.Helper()
	id := newIdentity(t)
	s, p, _, cfg := trusted(t, id)
	s.expect(statCommand(target), shellHandler(statCommand(target)))
	s.expectPrefix("chown -- 'root:root' ", script("", "", 0))
	// pkg/sftp's server lacks fsync@openssh.com, so uploads fall back to sync(1).
	s.expectPrefix("sync -- '"+filepath.Dir(target)+"/.", script("", "", 0))
	return s, connectOK(t, p, cfg)
}

func count(items []string, want string) int {
	n := 0
	for _, it := range items {
		if it == want {
			n++
		}
	}
	return n
}

func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, ".*.kprov-*.tmp"))
	return m
}

// modeAtFirstRead records the temporary file's mode when the first byte is
// about to be written.
type modeAtFirstRead struct {
	t    *testing.T
	dir  string
	r    io.Reader
	mode os.FileMode
	seen bool
}

func (m *modeAtFirstRead) Read(p []byte) (int, error) {
	if !m.seen {
		m.seen = true
		if tmp := tempFiles(m.t, m.dir); len(tmp) == 1 {
			st, _ := os.Stat(tmp[0])
			m.mode = st.Mode().Perm()
		}
	}
	return m.r.Read(p)
}

func TestUploadAtomicSecret(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "ca.key")
	_, c := uploadServer(t, target)
	src := &modeAtFirstRead{t: t, dir: dir, r: strings.NewReader("PRIVATE KEY")}
	changed, err := c.Upload(ctxT(t), FileSpec{Path: target, Content: src, Secret: true, Owner: "root:root"})
	if err != nil || !changed {
		t.Fatalf("upload = %v, %v", changed, err)
	}
	if src.mode != 0o600 {
		t.Errorf("temporary file had mode %o before the first byte, want 600", src.mode)
	}
	st, _ := os.Stat(target)
	if data, _ := os.ReadFile(target); string(data) != "PRIVATE KEY" || st.Mode().Perm() != 0o600 {
		t.Errorf("target = %q mode %o", data, st.Mode().Perm())
	}
	if tmp := tempFiles(t, dir); len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
}

func TestUploadSkipsUnchanged(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "kubeadm.yaml")
	s, c := uploadServer(t, target)
	content := []byte("apiVersion: kubeadm.k8s.io/v1beta4\n")
	if changed, err := c.Upload(ctxT(t), FileSpec{Path: target, Content: bytes.NewReader(content)}); err != nil || !changed {
		t.Fatalf("first upload = %v, %v", changed, err)
	}
	sftpBefore := count(s.sessionRequests(), "subsystem")
	changed, err := c.Upload(ctxT(t), FileSpec{Path: target, Content: bytes.NewReader(content)})
	if err != nil || changed {
		t.Fatalf("second upload = %v, %v; want unchanged", changed, err)
	}
	if n := count(s.sessionRequests(), "subsystem") - sftpBefore; n != 0 {
		t.Errorf("unchanged seekable content still opened %d sftp sessions", n)
	}
	// A stream cannot be hashed up front: it is sent, compared, discarded.
	changed, err = c.Upload(ctxT(t), FileSpec{Path: target, Content: io.MultiReader(bytes.NewReader(content))})
	if err != nil || changed {
		t.Fatalf("streamed upload = %v, %v; want unchanged", changed, err)
	}
	// A different mode is a change.
	changed, err = c.Upload(ctxT(t), FileSpec{Path: target, Content: bytes.NewReader(content), Mode: 0o640})
	if err != nil || !changed {
		t.Fatalf("mode change upload = %v, %v; want changed", changed, err)
	}
	if tmp := tempFiles(t, dir); len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
	sum, exists, err := c.Checksum(ctxT(t), target)
	if want := fmt.Sprintf("%x", sha256.Sum256(content)); err != nil || !exists || sum != want {
		t.Errorf("checksum = %q, %v, %v", sum, exists, err)
	}
}

// blockingReader delivers n bytes, then blocks until ctx ends, like a source
// that stalls while the operator presses Ctrl-C.
type blockingReader struct {
	ctx  context.Context
	n    int
	sent int
	half chan struct{}
}

func (r *blockingReader) Read(p []byte) (int, error) {
	if r.sent >= r.n {
		close(r.half)
		<-r.ctx.Done()
		return 0, r.ctx.Err()
	}
	k := min(len(p), r.n-r.sent)
	for i := range k {
		p[i] = 'x'
	}
	r.sent += k
	return k, nil
}

func TestUploadInterruptedKeepsOldContent(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "admin.conf")
	if err := os.WriteFile(target, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, c := uploadServer(t, target)
	ctx, cancel := context.WithCancel(ctxT(t))
	src := &blockingReader{ctx: ctx, n: 1 << 20, half: make(chan struct{})}
	go func() { <-src.half; cancel() }()
	_, err := c.Upload(ctx, FileSpec{Path: target, Content: src, Mode: 0o600})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if data, _ := os.ReadFile(target); string(data) != "old" {
		t.Errorf("target = %.20q..., want the old content", data)
	}
	if tmp := tempFiles(t, dir); len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
}

func TestDownload(t *testing.T) {
	id := newIdentity(t)
	_, p, _, cfg := trusted(t, id)
	src := filepath.Join(t.TempDir(), "admin.conf")
	os.WriteFile(src, []byte("kubeconfig"), 0o600)
	c := connectOK(t, p, cfg)
	var buf bytes.Buffer
	if err := c.Download(ctxT(t), src, &buf); err != nil || buf.String() != "kubeconfig" {
		t.Fatalf("download = %q, %v", buf.String(), err)
	}
	err := c.Download(ctxT(t), src+".missing", &buf)
	if !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "cp-1: download ") {
		t.Errorf("err = %v, want a not-exist error prefixed with host and operation", err)
	}
}
