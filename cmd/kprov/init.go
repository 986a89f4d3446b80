package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kprov/kprov/inventory"
)

func init() { commands = append(commands, newInitCmd) }

func newInitCmd(g *globalOptions) *cobra.Command {
	var topology string
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Write a commented starter inventory",
		Long: `init writes a starter inventory to the file named by -f (kprov.hcl by
default) for one of the topologies kprov serves. It never overwrites a file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains(inventory.StarterTopologies, topology) {
				return usageError("--topology %q: choose one of %s", topology, strings.Join(inventory.StarterTopologies, ", "))
			}
			src, err := inventory.Starter(topology)
			if err != nil {
				return err
			}
			// O_EXCL: an existing inventory is someone's work; never replace it.
			f, err := os.OpenFile(g.file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%s already exists; remove it or name another file with -f", g.file)
			}
			if err != nil {
				return err
			}
			if _, err := f.Write(src); err != nil {
				f.Close()
				os.Remove(g.file)
				return fmt.Errorf("write %s: %w", g.file, err)
			}
			if err := f.Close(); err != nil {
				return fmt.Errorf("write %s: %w", g.file, err)
			}
			fmt.Fprintf(g.stdout, "wrote %s (%s topology); check it with: kprov validate -f %s\n", g.file, topology, g.file)
			return nil
		},
	}
	cmd.Flags().StringVar(&topology, "topology", "single", "the starter's `TOPOLOGY`: "+strings.Join(inventory.StarterTopologies, ", "))
	_ = cmd.RegisterFlagCompletionFunc("topology", cobra.FixedCompletions(inventory.StarterTopologies, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}
