cluster "bad" {
  kubernetes_version = "1.37.2"
}

host "cp-1" {
  address = "10.244.3.7"
  roles   = ["master", "compute"]
}
