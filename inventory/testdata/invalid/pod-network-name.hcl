cluster "routes" {
  kubernetes_version     = "1.37.2"
  control_plane_endpoint = "api.example.internal:6443"
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master"]
}

host "worker-1" {
  address = "worker-1.example.internal"
  roles   = ["compute"]
}

host "worker-2" {
  address = "2001:db8::22"
  roles   = ["compute"]
}

# A DNS name is fine for a host that runs no kubelet.
host "etcd-1" {
  address = "etcd-1.example.internal"
  roles   = ["etcd"]
}
