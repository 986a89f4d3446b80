cluster "Bad_Name" {
  kubernetes_version = "1.37.2"
}

host "CP_1" {
  address = "192.0.2.11"
  roles   = []
}
