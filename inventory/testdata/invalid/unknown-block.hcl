cluster "bad" {
  kubernetes_version = "1.37.2"
}

hosts "cp-1" {
  address = "192.0.2.11"
  roles   = ["master"]
}
