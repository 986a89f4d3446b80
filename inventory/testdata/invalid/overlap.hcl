cluster "bad" {
  kubernetes_version = "1.37.2"
  pod_subnet         = "10.0.0.0/8"
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master", "compute"]
}
