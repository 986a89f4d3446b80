# External etcd with infra hosts, user labels, taints and kubelet flags.
cluster "ext" {
  kubernetes_version     = "1.37.2"
  control_plane_endpoint = "api.ext.internal:6443"
  pod_subnet             = "10.32.0.0/16"
  service_subnet         = "10.33.0.0/16"
}

etcd {
  data_dir = "/srv/etcd"
}

dynamic "host" {
  for_each = range(1, 4)
  labels   = ["cp-${host.value}"]
  content {
    address = "10.0.0.${10 + host.value}"
    roles   = ["master"]
  }
}

dynamic "host" {
  for_each = range(1, 4)
  labels   = ["etcd-${host.value}"]
  content {
    address = "10.0.0.${20 + host.value}"
    roles   = ["etcd"]
  }
}

dynamic "host" {
  for_each = range(1, 4)
  labels   = ["infra-${host.value}"]
  content {
    address = "10.0.0.${30 + host.value}"
    roles   = ["infra"]
  }
}

host "gpu-1" {
  address            = "10.0.0.41"
  roles              = ["compute"]
  labels             = { "example.com/gpu" = "a100" }
  taints             = ["example.com/gpu=true:NoSchedule"]
  kubelet_extra_args = { "max-pods" = "250", "node-ip" = "10.0.1.41" }
}
