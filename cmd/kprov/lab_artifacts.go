package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kprov/kprov/lab"
)

func newLabArtifactsCmd(g *globalOptions) *cobra.Command {
	var (
		dir string
		v   lab.Versions
	)
	cmd := &cobra.Command{
		Use:   "artifacts",
		Short: "Build etcd, etcdctl, etcdutl, kubeadm, kubelet and kubectl from the Go module proxy into a local cache",
		Long: `kprov lab artifacts builds the binaries kprov pushes to lab machines, the way
an air-gapped site is provisioned: from the operator's machine, with no
downloads on the hosts. Cached binaries whose checksum matches SHA256SUMS
are not rebuilt. Needs the go command and the Go module proxy; not root.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger()
			if err != nil {
				return err
			}
			ctx, cancel := signalContext(cmd)
			defer cancel()
			a, err := lab.BuildArtifacts(ctx, dir, v, logger)
			if err != nil {
				return fmt.Errorf("lab artifacts: %w", err)
			}
			for _, art := range a.All() {
				fmt.Fprintf(g.stdout, "%s  %s\n", art.SHA256, art.Path)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", lab.DefaultArtifactsDir, "artifact cache directory")
	f.StringVar(&v.Etcd, "etcd-version", lab.DefaultEtcdVersion, "etcd release")
	f.StringVar(&v.Kubernetes, "kubernetes-version", lab.DefaultKubernetesVersion, "Kubernetes release (for kubeadm)")
	return cmd
}
