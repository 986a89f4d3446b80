package main

import "github.com/spf13/cobra"

func newLabArtifactsCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{Use: "artifacts", Hidden: true}
}
