cluster "bad" {
  kubernetes_version = "1.37.2"
}

locals {
  a = local.b
  b = local.a
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master", "compute"]
}
