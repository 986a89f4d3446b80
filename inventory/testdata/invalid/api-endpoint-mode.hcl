cluster "bad" {
  kubernetes_version = "1.37.2"
  api_endpoint {
    mode = "vip"
  }
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master"]
}
