package apiproxy

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
)

// Main is the kprov-apiproxy command; it returns the exit status: 0 after
// SIGTERM or SIGINT, 2 for bad flags or an upstreams file unreadable at
// start, 1 when it cannot listen or serve. On SIGHUP it reads the
// upstreams file again; a bad file is logged and the running list kept,
// so a broken edit never leaves the node without an API server.
func Main(args []string) int {
	return run(args, os.Stderr)
}

// run is Main writing its usage and start-up errors to stderr.
func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("kprov-apiproxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg Config
	fs.StringVar(&cfg.Listen, "listen", DefaultListen, "address to accept API clients on")
	fs.StringVar(&cfg.UpstreamsFile, "upstreams", DefaultUpstreamsFile, "file of kube-apiserver addresses, one host:port a line; re-read on SIGHUP")
	fs.DurationVar(&cfg.CheckInterval, "check-interval", DefaultCheckInterval, "time between health checks of the upstreams")
	fs.DurationVar(&cfg.CheckTimeout, "check-timeout", DefaultCheckTimeout, "timeout of one upstream's /readyz check")
	fs.DurationVar(&cfg.DialTimeout, "dial-timeout", DefaultDialTimeout, "timeout of one dial to an upstream")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kprov-apiproxy: unexpected arguments %q; it takes only flags\n", fs.Args())
		return 2
	}
	addrs, err := ReadUpstreams(cfg.UpstreamsFile)
	if err != nil {
		fmt.Fprintf(stderr, "kprov-apiproxy: %v\n", err)
		return 2
	}
	p := New(cfg)
	cfg = p.cfg
	p.SetUpstreams(addrs)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		cfg.Logf("kprov-apiproxy: %v", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				addrs, err := ReadUpstreams(cfg.UpstreamsFile)
				if err != nil {
					cfg.Logf("SIGHUP: keeping the current upstreams: %v", err)
					continue
				}
				p.SetUpstreams(addrs)
			}
		}
	}()
	cfg.Logf("kprov-apiproxy listening on %s", ln.Addr())
	if err := p.Serve(ctx, ln); err != nil {
		cfg.Logf("kprov-apiproxy: %v", err)
		return 1
	}
	return 0
}
