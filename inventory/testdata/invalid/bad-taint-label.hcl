cluster "bad" {
  kubernetes_version = "1.37.2"
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master", "compute"]
  taints  = ["dedicated=ops", "gpu=true:NoSchedul"]
  labels  = { "bad key!" = "x" }
}
