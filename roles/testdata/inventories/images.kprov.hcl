# Stacked etcd with every image from the operator's machine: kubeadm pulls
# nothing (imagePullPolicy Never) and stacked etcd runs etcd.version.
cluster "images" {
  kubernetes_version     = "1.37.2"
  control_plane_endpoint = "192.0.2.11:6443"
}

etcd {
  version = "3.6.16"
}

artifacts {
  images = [
    { path = "images/control-plane.tar", sha256 = "1111111111111111111111111111111111111111111111111111111111111111" },
    { path = "images/node.tar", sha256 = "2222222222222222222222222222222222222222222222222222222222222222" },
  ]
}

host "master-1" {
  address = "192.0.2.11"
  roles   = ["master"]
}

host "compute-1" {
  address = "192.0.2.101"
  roles   = ["compute"]
}
