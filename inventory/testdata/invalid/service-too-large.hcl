cluster "bad" {
  kubernetes_version = "1.37.2"
  service_subnet     = "10.64.0.0/10"
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master", "compute"]
}
