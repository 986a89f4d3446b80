variable "ssh_user" { default = "ops" }
locals { base = "192.0.2" }

cluster "lab" {
  kubernetes_version     = "1.37.2"
  control_plane_endpoint = "api.lab.internal:6443"
  pod_subnet             = "10.244.0.0/16"
  service_subnet         = "10.96.0.0/12"
}

ssh {
  user            = var.ssh_user
  port            = 22
  identity_file   = "~/.ssh/id_ed25519"
  known_hosts     = "~/.ssh/known_hosts"
  host_key_policy = "strict"
  bastion         = "ops@jump.lab.internal:22"
}

etcd {
  version  = "3.6.16"
  data_dir = "/var/lib/etcd"
}

host "cp-1" {
  address = "${local.base}.11"
  roles   = ["master"]
  labels  = { "topology.kubernetes.io/zone" = "a" }
  taints  = ["dedicated=ops:NoSchedule"]
  ssh { user = "admin" }
}

host "cp-2" {
  address = "${local.base}.12"
  roles   = ["master"]
}

host "cp-3" {
  address = "${local.base}.13"
  roles   = ["master"]
}

dynamic "host" {
  for_each = range(1, 4)
  labels   = [format("etcd-%d", host.value)]
  content {
    address = "${local.base}.${20 + host.value}"
    roles   = ["etcd"]
  }
}

dynamic "host" {
  for_each = range(1, 4)
  labels   = [format("infra-%d", host.value)]
  content {
    address = "${local.base}.${30 + host.value}"
    roles   = ["infra"]
  }
}

dynamic "host" {
  for_each = range(1, 11)
  labels   = [format("worker-%02d", host.value)]
  content {
    address = cidrhost("192.0.2.128/25", host.value)
    roles   = ["compute"]
  }
}
