# With pod_network = "none", a node's address may be a DNS name: kprov
# routes nothing through it.
cluster "byo-cni" {
  kubernetes_version = "1.37.2"
  pod_network        = "none"
}

host "cp-1" {
  address = "cp-1.example.internal"
  roles   = ["master", "compute"]
}
