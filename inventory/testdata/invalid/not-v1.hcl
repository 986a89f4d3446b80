cluster "bad" {
  kubernetes_version = "2.0.0"
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master", "compute"]
}
