cluster "bad" {
  kubernetes_version = "1.37.2"


host "cp-1" {
  address = "192.0.2.11"
