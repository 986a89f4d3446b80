// Command pause is the sandbox process of every pod in the lab's pause
// image (`kprov lab artifacts` builds it static and embeds this source): it
// holds the pod's namespaces open, reaps children that are reparented to
// it when the pod shares its process namespace (it is PID 1 there), and
// exits 0 on SIGINT or SIGTERM, as Kubernetes' own pause does.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		// Several children may end for one SIGCHLD: reap all that have.
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
