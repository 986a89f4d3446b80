cluster "flannel" {
  kubernetes_version = "1.37.2"
  pod_network        = "flannel"
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master", "compute"]
}
