variable "user" { default = "ops" }

cluster "bad" {
  kubernetes_version = "1.37.2"
}

ssh {
  user = var.usr
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master", "compute"]
}
