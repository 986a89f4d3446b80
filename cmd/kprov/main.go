// Command kprov provisions Kubernetes clusters onto machines over SSH.
package main

import "os"

func main() { os.Exit(Main()) }
