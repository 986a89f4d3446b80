cluster "poc" {
  kubernetes_version = "1.37.2"
}

host "cp-1" {
  address = "192.0.2.10"
  roles   = ["master"]
}

host "worker-1" {
  address = "192.0.2.21"
  roles   = ["compute"]
}

host "worker-2" {
  address = "192.0.2.22"
  roles   = ["compute"]
}
