package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

func init() { commands = append(commands, newVersionCmd) }

func newVersionCmd(g *globalOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print kprov's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := kprovVersion()
			if asJSON {
				return writeJSON(g.stdout, map[string]string{"version": v, "os": runtime.GOOS, "arch": runtime.GOARCH, "go": runtime.Version()})
			}
			fmt.Fprintf(g.stdout, "kprov %s %s/%s %s\n", v, runtime.GOOS, runtime.GOARCH, runtime.Version())
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print version, os, arch and go as JSON")
	return cmd
}

// kprovVersion is the version set at build time, else the module version
// go install recorded, else "dev".
func kprovVersion() string {
	if version == "dev" {
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
	}
	return version
}
