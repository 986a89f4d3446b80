// Command kprov-apiproxy is the node-local load balancer in front of every
// master's kube-apiserver: it listens on 127.0.0.1:6444, which kubeadm's
// controlPlaneEndpoint names, and spreads connections over the healthy
// masters, so a node keeps its API server while any one master is down.
// kprov builds it from the embedded source of package apiproxy and runs it
// as a systemd unit; SIGHUP re-reads the upstreams file.
package main

import (
	"os"

	"github.com/kprov/kprov/apiproxy"
)

func main() { os.Exit(apiproxy.Main(os.Args[1:])) }
