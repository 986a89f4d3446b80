cluster "three-masters" {
  kubernetes_version = "1.37.2"
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master"]
}

host "cp-2" {
  address = "192.0.2.12"
  roles   = ["master"]
}

host "cp-3" {
  address = "192.0.2.13"
  roles   = ["master"]
}
