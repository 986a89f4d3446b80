cluster "bad" {
  kubernetes_version = "1.37.2"
  pod_subnet         = "10.244.0.0/33"
  service_subnet     = "10.96.1.0/12"
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master", "compute"]
}
