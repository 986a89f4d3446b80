# The endpoint's host is checked like an address, and takes no zone: every
# node and certificate uses it.
cluster "bad" {
  kubernetes_version     = "1.37.2"
  control_plane_endpoint = "api.bad.internal\n* ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKprovattacker:6443"
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master", "compute"]
}
