# Each node bridges its own /24 of pod_subnet: a /23 holds two.
cluster "poc" {
  kubernetes_version = "1.37.2"
  pod_subnet         = "10.244.0.0/23"
}

host "cp-1" {
  address = "192.0.2.10"
  roles   = ["master"]
}

host "etcd-1" {
  address = "192.0.2.11"
  roles   = ["etcd"]
}

host "worker-1" {
  address = "192.0.2.21"
  roles   = ["compute"]
}

host "worker-2" {
  address = "192.0.2.22"
  roles   = ["compute"]
}
