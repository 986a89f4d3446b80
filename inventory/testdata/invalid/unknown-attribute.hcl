cluster "bad" {
  kubernetes_version = "1.37.2"
}

host "cp-1" {
  adress = "192.0.2.11"
  roles  = ["master"]
}
