cluster "ocp" {
  kubernetes_version     = "1.37.2"
  control_plane_endpoint = "api.ocp.internal:6443"
}

dynamic "host" {
  for_each = range(1, 4)
  labels   = ["master-${host.value}"]
  content {
    address = cidrhost("192.0.2.0/26", host.value)
    roles   = ["master"]
  }
}

dynamic "host" {
  for_each = range(1, 3)
  labels   = ["infra-${host.value}"]
  content {
    address = cidrhost("192.0.2.64/26", host.value)
    roles   = ["infra"]
  }
}

host "app-1" {
  address = "192.0.2.200"
  roles   = ["compute"]
}
