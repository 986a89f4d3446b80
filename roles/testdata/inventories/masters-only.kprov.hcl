# Three masters and nothing else: the masters take workloads, so none is tainted.
cluster "trio" {
  kubernetes_version     = "1.37.2"
  control_plane_endpoint = "10.20.0.100:6443"
  dns_domain             = "trio.internal"
}

dynamic "host" {
  for_each = range(1, 4)
  labels   = ["cp-${host.value}"]
  content {
    address = "10.20.0.${10 + host.value}"
    roles   = ["master", "etcd"]
  }
}
