# Air-gapped: every binary comes from the operator's machine.
locals { bin = "~/kprov-artifacts" }

cluster "airgap" {
  kubernetes_version = "1.37.2"
}

artifacts {
  etcd    = { path = "${local.bin}/etcd", sha256 = "a07eb520a05975c8eac8e1201d4d66e8448680fbcab27449dd2beecf4585f38b" }
  etcdctl = { path = "bin/etcdctl", sha256 = "8BCEB5FFC0D0F145B2F7102465904279B6C096EC24CCF5B908C9F6CFC2110DCE" }
  kubeadm = { path = "/opt/kubernetes/kubeadm", sha256 = "45f20c609d0cc4de76fb0ba3375d94c93488dc8af9686f29d8494411322eee12" }
  containerd-shim-runc-v2 = { path = "bin/containerd-shim-runc-v2", sha256 = "1111111111111111111111111111111111111111111111111111111111111111" }
  cni-plugins             = { path = "bin/cni-plugins.tgz", sha256 = "2222222222222222222222222222222222222222222222222222222222222222" }
  images = [for i, name in ["pause_3.10.2", "etcd_3.6.16-0"] : { path = "images/${name}.tar", sha256 = format("%064d", i + 3) }]
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master"]
}
