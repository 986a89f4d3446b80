# Kubernetes 1.30 predates kubeadm's v1beta4 API: kprov renders v1beta3.
# One master and no control_plane_endpoint: nodes join the master directly.
cluster "old" {
  kubernetes_version = "1.30.9"
}

host "cp" {
  address            = "10.2.0.10"
  roles              = ["master"]
  kubelet_extra_args = { "v" = "2" }
}

host "worker" {
  address = "10.2.0.20"
  roles   = ["compute"]
}
