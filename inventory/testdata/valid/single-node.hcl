cluster "solo" {
  kubernetes_version = "1.37.2"
}

host "node-1" {
  address = "192.0.2.10"
  roles   = ["master"]
}
