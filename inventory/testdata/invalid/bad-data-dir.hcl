# Removing a member wipes etcd's data directory: it may not be, contain or
# sit inside anything kprov or the system keeps files in.
cluster "bad" {
  kubernetes_version = "1.37.2"
}

etcd {
  data_dir = "/etc/kubernetes"
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master", "compute"]
}
