cluster "airgap" {
  kubernetes_version = "1.37.2"
}

artifacts {
  etcd     = { path = "bin/etcd", sha256 = "abc" }
  kubelett = { path = "bin/kubelet", sha256 = "a07eb520a05975c8eac8e1201d4d66e8448680fbcab27449dd2beecf4585f38b" }
  kubectl  = { path = "bin/kubectl", sha265 = "a07eb520a05975c8eac8e1201d4d66e8448680fbcab27449dd2beecf4585f38b" }
  kubeadm  = "bin/kubeadm"
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master"]
}
