# ::ffff:192.0.2.11 is 192.0.2.11 written as an IPv6 address: the same host.
cluster "bad" {
  kubernetes_version     = "1.37.2"
  control_plane_endpoint = "api.bad.internal:6443"
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master"]
}

host "worker-1" {
  address = "::ffff:192.0.2.11"
  roles   = ["compute"]
}

host "worker-2" {
  address = "Worker-2.Bad.Internal"
  roles   = ["compute"]
}

host "worker-3" {
  address = "worker-2.bad.internal"
  roles   = ["compute"]
}
