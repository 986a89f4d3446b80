cluster "bad" {
  kubernetes_version     = "1.37.2"
  control_plane_endpoint = "api.bad.internal:6443"
}

host "worker-1" {
  address = "192.0.2.100"
  roles   = ["compute"]
}
