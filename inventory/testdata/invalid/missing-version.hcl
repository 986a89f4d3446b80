cluster "bad" {
  pod_subnet = "10.244.0.0/16"
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master", "compute"]
}
