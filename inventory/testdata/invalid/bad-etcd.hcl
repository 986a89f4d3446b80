cluster "bad" {
  kubernetes_version = "1.37.2"
}

etcd {
  version  = "3.4.30"
  data_dir = "var/lib/etcd"
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master", "compute"]
}
