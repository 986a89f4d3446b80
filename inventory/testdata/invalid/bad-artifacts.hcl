cluster "airgap" {
  kubernetes_version = "1.37.2"
}

artifacts {
  etcd     = { path = "bin/etcd", sha256 = "abc" }
  kubelett = { path = "bin/kubelet", sha256 = "a07eb520a05975c8eac8e1201d4d66e8448680fbcab27449dd2beecf4585f38b" }
  kubectl  = { path = "bin/kubectl", sha265 = "a07eb520a05975c8eac8e1201d4d66e8448680fbcab27449dd2beecf4585f38b" }
  kubeadm  = "bin/kubeadm"
  image    = [{ path = "images/pause.tar", sha256 = "a07eb520a05975c8eac8e1201d4d66e8448680fbcab27449dd2beecf4585f38b" }]
  images = [
    { path = "images/pause.tar", sha256 = "a07eb520a05975c8eac8e1201d4d66e8448680fbcab27449dd2beecf4585f38b" },
    { path = "images/etcd.tar", sha256 = "A07EB520A05975C8EAC8E1201D4D66E8448680FBCAB27449DD2BEECF4585F38B" },
    { path = "images/coredns.tar" },
  ]
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master"]
}
