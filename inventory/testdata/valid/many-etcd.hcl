cluster "big" {
  kubernetes_version     = "1.37.2"
  control_plane_endpoint = "api.big.internal:6443"
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master"]
}

dynamic "host" {
  for_each = range(1, 10)
  labels   = [format("etcd-%d", host.value)]
  content {
    address = cidrhost("192.0.2.32/27", host.value)
    roles   = ["etcd"]
  }
}

host "worker-1" {
  address = "192.0.2.100"
  roles   = ["compute"]
}
