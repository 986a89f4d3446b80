# External etcd, air-gapped: every binary comes from the operator's machine.
cluster "airgap" {
  kubernetes_version     = "1.37.2"
  control_plane_endpoint = "192.0.2.11:6443"
}

artifacts {
  etcd    = { path = "bin/etcd", sha256 = "a07eb520a05975c8eac8e1201d4d66e8448680fbcab27449dd2beecf4585f38b" }
  etcdctl = { path = "bin/etcdctl", sha256 = "8bceb5ffc0d0f145b2f7102465904279b6c096ec24ccf5b908c9f6cfc2110dce" }
  etcdutl = { path = "bin/etcdutl", sha256 = "f75e29c29206a637ce6ad32e9fa03e3205ea2be0d32708eea53947f8bd370b73" }
  kubeadm = { path = "bin/kubeadm", sha256 = "45f20c609d0cc4de76fb0ba3375d94c93488dc8af9686f29d8494411322eee12" }

  # The container runtime: binaries to /usr/local/bin, the CNI plugins
  # unpacked into /opt/cni/bin.
  containerd                = { path = "bin/containerd", sha256 = "1111111111111111111111111111111111111111111111111111111111111111" }
  ctr                       = { path = "bin/ctr", sha256 = "2222222222222222222222222222222222222222222222222222222222222222" }
  containerd-shim-runc-v2   = { path = "bin/containerd-shim-runc-v2", sha256 = "3333333333333333333333333333333333333333333333333333333333333333" }
  runc                      = { path = "bin/runc", sha256 = "4444444444444444444444444444444444444444444444444444444444444444" }
  cni-plugins               = { path = "cni-plugins.tgz", sha256 = "5555555555555555555555555555555555555555555555555555555555555555" }
}

host "etcd-1" {
  address = "192.0.2.21"
  roles   = ["etcd"]
}

host "master-1" {
  address = "192.0.2.11"
  roles   = ["master"]
}

host "compute-1" {
  address = "192.0.2.101"
  roles   = ["compute"]
}
