cluster "bad" {
  kubernetes_version     = "1.37.2"
  control_plane_endpoint = "api.bad.internal:6443"
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master"]
}

dynamic "host" {
  for_each = range(1, 5)
  labels   = ["etcd-${host.value}"]
  content {
    address = "192.0.2.${20 + host.value}"
    roles   = ["etcd"]
  }
}

host "worker-1" {
  address = "192.0.2.100"
  roles   = ["compute"]
}

