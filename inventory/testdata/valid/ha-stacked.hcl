cluster "prod" {
  kubernetes_version     = "1.37.2"
  control_plane_endpoint = "api.prod.internal"
}

dynamic "host" {
  for_each = ["a", "b", "c"]
  labels   = ["cp-${host.value}"]
  content {
    address = "192.0.2.${11 + host.key}"
    roles   = ["master", "etcd"]
    labels  = { "topology.kubernetes.io/zone" = host.value }
  }
}

host "worker-1" {
  address = "192.0.2.21"
  roles   = ["compute"]
}
