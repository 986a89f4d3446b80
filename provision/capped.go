package provision

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/kprov/kprov/provision/ssh"
)

// Every read from a host is bounded: a host's replies are not trusted, and
// a host (or something in its place) that answers with gigabytes must not
// exhaust the operator's memory. Past a cap the read stops with an error
// that says which read and how much was allowed.
const (
	// maxCommandOutput bounds what kprov reads of one command's stdout or
	// stderr when the caller sets no cap of its own.
	maxCommandOutput = 1 << 20
	// maxKubeconfig bounds the admin kubeconfig fetched from a master; a
	// real one is a few KiB.
	maxKubeconfig = 1 << 20
	// maxEtcdReply bounds one etcd reply through the tunnel (a member list
	// or a status is a few KiB); etcd's client would otherwise accept 2 GiB.
	maxEtcdReply = 16 << 20
)

// ErrReplyTooLarge is what a read past its cap matches with errors.Is.
var ErrReplyTooLarge = errors.New("reply larger than kprov accepts")

// runCapped runs a command with its output capped (maxCommandOutput unless
// cmd sets MaxOutput) and fails when the host printed more than the cap,
// instead of acting on output cut short.
func runCapped(ctx context.Context, ex ssh.Executor, cmd ssh.Command) (ssh.Result, error) {
	if cmd.MaxOutput <= 0 {
		cmd.MaxOutput = maxCommandOutput
	}
	res, err := ex.Run(ctx, cmd)
	if err == nil && res.Truncated {
		err = fmt.Errorf("%w: the command printed over %d bytes", ErrReplyTooLarge, cmd.MaxOutput)
	}
	return res, err
}

// cappedWriter accepts at most max bytes and fails past them.
type cappedWriter struct {
	w    io.Writer
	n    int64
	max  int64
	what string
}

func (c *cappedWriter) Write(p []byte) (int, error) {
	if c.n+int64(len(p)) > c.max {
		return 0, fmt.Errorf("%w: %s is over %d bytes", ErrReplyTooLarge, c.what, c.max)
	}
	c.n += int64(len(p))
	return c.w.Write(p)
}
