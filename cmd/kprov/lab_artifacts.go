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
		Short: "Build the binaries, CNI plugins and control-plane images a lab needs, from the Go module proxy, into a local cache",
		Long: `kprov lab artifacts builds what kprov pushes to lab machines, the way an
air-gapped site is provisioned: from the operator's machine, with no
downloads on the hosts. It builds etcd, etcdctl and etcdutl; the seven
Kubernetes commands in one go build; containerd, ctr and
containerd-shim-runc-v2; the CNI plugins as cni-plugins.tgz;
kprov-apiproxy from kprov's own source; and an OCI
image archive of every image kubeadm lists for the Kubernetes version
(kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy with
iptables and conntrack from a lab root filesystem, pause, etcd, CoreDNS),
plus the network check workload's image (kprov.local/netcheck). It prints
each file in sha256sum's format, an image archive's line followed by its
image reference.
Cached files whose checksum matches SHA256SUMS are not rebuilt. Needs the
go command and the Go module proxy; not root.`,
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
			// sha256sum's format; an image archive's line adds its reference.
			for _, art := range a.All() {
				if art.Image {
					fmt.Fprintf(g.stdout, "%s  %s  %s\n", art.SHA256, art.Path, art.Name)
					continue
				}
				fmt.Fprintf(g.stdout, "%s  %s\n", art.SHA256, art.Path)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", lab.DefaultArtifactsDir, "artifact cache directory")
	f.StringVar(&v.Etcd, "etcd-version", lab.DefaultEtcdVersion, "etcd release (binaries and the etcd image)")
	f.StringVar(&v.Kubernetes, "kubernetes-version", lab.DefaultKubernetesVersion, "Kubernetes release (commands and images)")
	f.StringVar(&v.Containerd, "containerd-version", lab.DefaultContainerdVersion, "containerd release")
	f.StringVar(&v.CNIPlugins, "cni-plugins-version", lab.DefaultCNIPluginsVersion, "CNI plugins release")
	f.StringVar(&v.IptablesRoot, "iptables-root", "", "Debian root filesystem to take kube-proxy's iptables and conntrack from (default: the lab's cached root filesystem that has them)")
	return cmd
}
