cluster "ocp" {
  kubernetes_version     = "1.37.2"
  control_plane_endpoint = "api.ocp.internal:6443"
}

# Every infra host gets these instead of the built-in label and taint.
infra {
  labels = { "node-role.kubernetes.io/infra" = "", "example.com/pool" = "infra" }
  taints = ["node-role.kubernetes.io/infra=reserved:NoExecute"]
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master"]
}

dynamic "host" {
  for_each = range(1, 4)
  labels   = ["infra-${host.value}"]
  content {
    address = "192.0.2.${20 + host.value}"
    roles   = ["infra"]
    # infra-3 replaces the default taint with its own value.
    taints = host.value == 3 ? ["node-role.kubernetes.io/infra=logging:NoExecute"] : []
  }
}
