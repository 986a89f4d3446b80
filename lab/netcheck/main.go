// Command netcheck is the lab's network check workload (the e2e tests' and
// the demo's), built into the image NetcheckImage: a static
// HTTP server that says which pod and node answered and whom it saw
// asking, and the client modes the tests run in it with kubectl exec (the
// image holds nothing else).
//
//	netcheck serve                  answer on :8080 (POD_NAME, NODE_NAME from the downward API)
//	netcheck get [-n N] URL         fetch URL N times, print each answer's first line
//	netcheck resolve NAME           print NAME's addresses, through the pod's resolv.conf
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: netcheck serve | get [-n N] URL | resolve NAME")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve()
	case "get":
		err = get(os.Args[2:])
	case "resolve":
		err = resolve(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "netcheck:", err)
		os.Exit(1)
	}
}

// serve answers every request with one line: "pod=NAME node=NODE remote=IP".
func serve() error {
	pod, node := os.Getenv("POD_NAME"), os.Getenv("NODE_NAME")
	return http.ListenAndServe(":8080", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "pod=%s node=%s remote=%s\n", pod, node, host)
	}))
}

// get fetches a URL n times on fresh connections (so a Service spreads
// them) and prints each answer, or the error, one line each; it fails when
// every request failed.
func get(args []string) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	n := fs.Int("n", 1, "requests")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("get takes one URL")
	}
	ok := 0
	for i := 0; i < *n; i++ {
		client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Get(fs.Arg(0))
		if err != nil {
			fmt.Printf("error=%q\n", err.Error())
			continue
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			fmt.Printf("error=%q\n", err.Error())
			continue
		}
		ok++
		fmt.Println(strings.TrimSpace(string(b)))
	}
	if ok == 0 {
		return fmt.Errorf("no request to %s succeeded", fs.Arg(0))
	}
	return nil
}

// resolve prints a name's addresses, one a line, with Go's own resolver
// (the binary is static) reading the pod's /etc/resolv.conf.
func resolve(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("resolve takes one name")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, args[0])
	if err != nil {
		return err
	}
	for _, a := range addrs {
		fmt.Println(a)
	}
	return nil
}
