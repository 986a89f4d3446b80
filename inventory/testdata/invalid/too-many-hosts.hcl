# A dynamic block that would generate more than 10,000 hosts is refused at
# its for_each, before a single host is generated.
cluster "big" {
  kubernetes_version     = "1.37.2"
  control_plane_endpoint = "api.big.internal:6443"
}

host "cp-1" {
  address = "172.16.0.11"
  roles   = ["master"]
}

dynamic "host" {
  # range() stops at 1024 values, so 11,000 indexes come from blocks of 1000.
  for_each = flatten([for b in range(11) : [for i in range(1000) : b * 1000 + i]])
  labels   = [format("worker-%05d", host.value)]
  content {
    address = cidrhost("10.0.0.0/8", host.value + 10)
    roles   = ["compute"]
  }
}
