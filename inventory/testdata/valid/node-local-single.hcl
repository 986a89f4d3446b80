# One master behind the node-local proxy: masters added later join behind
# the same endpoint, which the API server's certificate already names.
cluster "lab" {
  kubernetes_version = "1.37.2"
  api_endpoint {
    mode = "node-local"
    port = 7443
  }
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master"]
}

host "worker-1" {
  address = "192.0.2.21"
  roles   = ["compute"]
}
