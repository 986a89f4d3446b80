cluster "bad" {
  kubernetes_version = "1.37.2"
  api_endpoint {
    mode = "node-local"
    port = 6443
  }
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master"]
}

host "cp-2" {
  address = "192.0.2.12"
  roles   = ["master"]
}

host "cp-3" {
  address = "192.0.2.13"
  roles   = ["master"]
}
