cluster "solo" {
  kubernetes_version = "v1.37.2"
}

host "node-1" {
  address = "192.0.2.10"
  roles   = ["master", "compute"]
}
