# kprov inventory (ha-stacked topology), written by `kprov init`.
# Check it with `kprov validate`; see README.md for every field.

# Variables can be set with -var NAME=VALUE or the environment (KPROV_VAR_NAME).
variable "ssh_user" {
  default = "root"
}

locals {
  # Documentation addresses (192.0.2.0/24): replace them with your machines'.
  network = "192.0.2.0/24"
}

cluster "example" {
  kubernetes_version = "1.37.2"
  # How nodes reach the API servers: "node-local" runs kprov-apiproxy on
  # 127.0.0.1:6444 on every node, spreading connections over every master
  # (nothing else to run); "external" uses control_plane_endpoint, a load
  # balancer, virtual IP or DNS name of yours in front of every master.
  api_endpoint {
    mode = "node-local"
  }
  # control_plane_endpoint = "api.example.internal:6443" # with mode = "external"
  pod_subnet     = "10.244.0.0/16"
  service_subnet = "10.96.0.0/12"
  # Pods reach other nodes through routes between the nodes (one L2 network);
  # "none" to install your own pod network after apply.
  pod_network = "routes"
}

ssh {
  user            = var.ssh_user
  port            = 22
  known_hosts     = "~/.ssh/known_hosts"
  host_key_policy = "strict" # refuse hosts whose key is not in known_hosts
  # identity_file = "~/.ssh/id_ed25519"   # default: the SSH agent and ~/.ssh/config
  # bastion       = "ops@jump.example.internal:22"
}

etcd {
  version  = "3.6.16"
  data_dir = "/var/lib/etcd"
}

# Masters run the control plane and, stacked, one etcd member each (an odd number).
dynamic "host" {
  for_each = range(1, 3 + 1)
  labels   = [format("master-%d", host.value)]
  content {
    address = cidrhost(local.network, 10 + host.value)
    roles   = ["master", "etcd"]
  }
}

# Compute hosts run application workloads.
dynamic "host" {
  for_each = range(1, 2 + 1)
  labels   = [format("compute-%d", host.value)]
  content {
    address = cidrhost(local.network, 100 + host.value)
    roles   = ["compute"]
  }
}
