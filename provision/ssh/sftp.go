package ssh

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/pkg/sftp"

	"github.com/kprov/kprov/internal/shell"
)

// FileSpec is a file to place on a host.
type FileSpec struct {
	Path    string      // absolute path on the host
	Mode    os.FileMode // 0 means 0644, or 0600 when Secret
	Owner   string      // "user" or "user:group" for chown; empty keeps root (or the login user)
	Content io.Reader   // streamed; when it is also an io.Seeker the upload is skipped before sending if unchanged
	Secret  bool        // contents are sensitive: mode defaults to 0600
}

func (f FileSpec) mode() os.FileMode {
	switch {
	case f.Mode != 0:
		return f.Mode.Perm()
	case f.Secret:
		return 0o600
	default:
		return 0o644
	}
}

// findSFTPServer starts the sftp-server binary through sudo for a non-root
// login: the sftp subsystem would run as the login user and could not write
// root's files. Distributions install the binary in different places.
const findSFTPServer = `for p in /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server /usr/lib/ssh/sftp-server /usr/libexec/sftp-server; do [ -x "$p" ] && exec "$p"; done; echo "no sftp-server binary found" >&2; exit 127`

// sftpSession is an SFTP client on its own SSH session. Each transfer gets
// its own, so cancelling one transfer (by closing it) never disturbs another
// on the same host.
type sftpSession struct {
	*sftp.Client
	stop func() bool
}

func (c *Client) openSFTP(ctx context.Context) (*sftpSession, error) {
	sess, err := c.conn.NewSession()
	if err != nil {
		return nil, fmt.Errorf("sftp: new session: %w", err)
	}
	w, err := sess.StdinPipe()
	if err != nil {
		sess.Close()
		return nil, fmt.Errorf("sftp: %w", err)
	}
	r, err := sess.StdoutPipe()
	if err != nil {
		sess.Close()
		return nil, fmt.Errorf("sftp: %w", err)
	}
	if c.sudo {
		err = sess.Start(c.wrap(findSFTPServer))
	} else {
		err = sess.RequestSubsystem("sftp")
	}
	if err != nil {
		sess.Close()
		return nil, fmt.Errorf("sftp: start: %w", err)
	}
	sc, err := sftp.NewClientPipe(r, w, sftp.UseConcurrentWrites(true))
	if err != nil {
		sess.Close()
		return nil, fmt.Errorf("sftp: %w", err)
	}
	s := &sftpSession{Client: sc}
	// pkg/sftp has no context support: closing the session aborts any
	// request in flight.
	s.stop = context.AfterFunc(ctx, func() {
		sc.Close()
		sess.Close()
	})
	go func() {
		_ = sc.Wait()
		sess.Close()
	}()
	return s, nil
}

func (s *sftpSession) close() {
	s.stop()
	s.Client.Close()
}

// Checksum returns the hex SHA-256 of a remote file; exists is false when
// there is no such file.
func (c *Client) Checksum(ctx context.Context, p string) (string, bool, error) {
	st, err := c.stat(ctx, p)
	return st.sum, st.exists, hostErr(c.cfg.Host, err)
}

// remoteStat is what Upload compares to decide that nothing needs writing.
type remoteStat struct {
	exists bool
	sum    string
	mode   os.FileMode
	owner  string // user:group
}

// stat hashes the file on the host so an unchanged file costs one command,
// not a transfer.
func (c *Client) stat(ctx context.Context, p string) (remoteStat, error) {
	cmd := statCommand(p)
	res, err := c.run(ctx, c.command(cmd), cmd, Command{}, redactor{})
	if err != nil {
		return remoteStat{}, fmt.Errorf("checksum %s: %w", p, err)
	}
	f := strings.Fields(string(res.Stdout))
	if len(f) == 1 && f[0] == "absent" {
		return remoteStat{}, nil
	}
	if len(f) < 3 || len(f[2]) != sha256.Size*2 {
		return remoteStat{}, fmt.Errorf("checksum %s: unexpected output %q", p, res.Stdout)
	}
	mode, err := strconv.ParseUint(f[0], 8, 32)
	if err != nil {
		return remoteStat{}, fmt.Errorf("checksum %s: mode %q: %w", p, f[0], err)
	}
	return remoteStat{exists: true, sum: f[2], mode: os.FileMode(mode), owner: f[1]}, nil
}

// statCommand prints "absent", or the mode, owner and SHA-256 of p.
func statCommand(p string) string {
	q := shell.Quote(p)
	return "if [ -e " + q + " ]; then stat -c '%a %U:%G' " + q + " && sha256sum < " + q + "; else echo absent; fi"
}

// chownCommand gives tmp its final owner before it is renamed into place.
func chownCommand(owner, tmp string) string {
	return "chown -- " + shell.Quote(owner) + " " + shell.Quote(tmp)
}

// syncCommand flushes one file to disk (coreutils sync with a file argument).
func syncCommand(file string) string {
	return "sync -- " + shell.Quote(file)
}

// matches reports whether the remote file already is what spec describes.
func (st remoteStat) matches(sum string, spec FileSpec) bool {
	if !st.exists || st.sum != sum || st.mode != spec.mode() {
		return false
	}
	if spec.Owner == "" {
		return true
	}
	if strings.Contains(spec.Owner, ":") {
		return st.owner == spec.Owner
	}
	user, _, _ := strings.Cut(st.owner, ":")
	return user == spec.Owner
}

// Upload places spec on the host atomically: the content goes to a new
// temporary file in the same directory (so the final rename stays within one
// file system), which gets its mode before the first byte is written (a
// secret is never readable by others, even half-written), is fsynced, chowned
// and then renamed over the target. An interrupted upload leaves the old file
// untouched. changed is false when the file already had this content, mode
// and owner.
func (c *Client) Upload(ctx context.Context, spec FileSpec) (bool, error) {
	changed, err := c.upload(ctx, spec)
	if err != nil {
		return false, hostErr(c.cfg.Host, fmt.Errorf("upload %s: %w", spec.Path, err))
	}
	return changed, nil
}

func (c *Client) upload(ctx context.Context, spec FileSpec) (bool, error) {
	if !path.IsAbs(spec.Path) {
		return false, errors.New("path must be absolute")
	}
	if spec.Content == nil {
		return false, errors.New("no content")
	}
	before, err := c.stat(ctx, spec.Path)
	if err != nil {
		return false, err
	}
	// With a seekable source, hash it first and skip the transfer entirely
	// when the host already has it.
	if rs, ok := spec.Content.(io.ReadSeeker); ok && before.exists {
		sum, err := hashReader(rs)
		if err != nil {
			return false, err
		}
		if before.matches(sum, spec) {
			c.log.Debug("upload skipped, unchanged", "path", spec.Path)
			return false, nil
		}
	}

	s, err := c.openSFTP(ctx)
	if err != nil {
		return false, err
	}
	defer s.close()
	tmp := tempName(spec.Path)
	sum, err := c.writeTemp(ctx, s, tmp, spec)
	if err == nil && before.matches(sum, spec) {
		c.log.Debug("upload unchanged, discarding temporary file", "path", spec.Path)
		err = s.Remove(tmp)
		return false, err
	}
	if err == nil && spec.Owner != "" {
		chown := chownCommand(spec.Owner, tmp)
		_, err = c.run(ctx, c.command(chown), chown, Command{}, redactor{})
	}
	if err == nil {
		// posix-rename replaces the target in one step; plain SFTP rename
		// refuses to overwrite.
		err = s.PosixRename(tmp, spec.Path)
	}
	if err != nil {
		c.removeTemp(ctx, tmp)
		if ctx.Err() != nil {
			return false, fmt.Errorf("%w (interrupted; %s left unchanged)", ctx.Err(), spec.Path)
		}
		return false, err
	}
	c.log.Debug("uploaded", "path", spec.Path, "mode", fmt.Sprintf("%04o", spec.mode()))
	return true, nil
}

// writeTemp creates tmp exclusively (O_EXCL: never follow or reuse a file
// someone planted under that name), sets its mode, streams the content and
// fsyncs it. It returns the content's SHA-256.
func (c *Client) writeTemp(ctx context.Context, s *sftpSession, tmp string, spec FileSpec) (string, error) {
	f, err := s.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return "", fmt.Errorf("create %s: %w", tmp, err)
	}
	h := sha256.New()
	werr := func() error {
		if err := f.Chmod(spec.mode()); err != nil {
			return fmt.Errorf("chmod %s: %w", tmp, err)
		}
		// ReadFromWithConcurrency keeps a bounded number of packets in
		// flight, so memory stays small however large the file is.
		if _, err := f.ReadFromWithConcurrency(io.TeeReader(ctxReader{ctx, spec.Content}, h), 0); err != nil {
			return fmt.Errorf("write %s: %w", tmp, err)
		}
		// Without fsync a crash after the rename can leave an empty file
		// under the target's name. Servers without the fsync@openssh.com
		// extension get a sync(1) of the file instead.
		err := f.Sync()
		var status *sftp.StatusError
		if errors.As(err, &status) && status.FxCode() == sftp.ErrSSHFxOpUnsupported {
			cmd := syncCommand(tmp)
			_, err = c.run(ctx, c.command(cmd), cmd, Command{}, redactor{})
		}
		if err != nil {
			return fmt.Errorf("fsync %s: %w", tmp, err)
		}
		return nil
	}()
	cerr := f.Close()
	if werr != nil {
		return "", werr
	}
	if cerr != nil {
		return "", fmt.Errorf("close %s: %w", tmp, cerr)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// removeTemp deletes a temporary file after a failure. It uses a fresh
// session with its own short deadline because the caller's context may be
// the reason the upload failed.
func (c *Client) removeTemp(ctx context.Context, tmp string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	s, err := c.openSFTP(rctx)
	if err == nil {
		defer s.close()
		err = s.Remove(tmp)
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		c.log.Warn("could not remove temporary file", "path", tmp, "err", err)
	}
}

// tempName is a hidden, unpredictable name beside target.
func tempName(target string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return path.Join(path.Dir(target), "."+path.Base(target)+".kprov-"+hex.EncodeToString(b[:])+".tmp")
}

func hashReader(rs io.ReadSeeker) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, rs); err != nil {
		return "", fmt.Errorf("read content: %w", err)
	}
	if _, err := rs.Seek(0, io.SeekStart); err != nil {
		return "", fmt.Errorf("rewind content: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ctxReader stops a stream when ctx ends, so a slow source cannot keep an
// upload going after cancellation.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// Download streams a remote file into w.
func (c *Client) Download(ctx context.Context, p string, w io.Writer) error {
	err := func() error {
		s, err := c.openSFTP(ctx)
		if err != nil {
			return err
		}
		defer s.close()
		f, err := s.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.WriteTo(w)
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}()
	if err != nil {
		return hostErr(c.cfg.Host, fmt.Errorf("download %s: %w", p, err))
	}
	return nil
}
