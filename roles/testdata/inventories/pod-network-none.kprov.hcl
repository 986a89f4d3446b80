# pod_network = "none": no bridge, no routes, and no wait for Ready (the
# user's CNI plugin makes the nodes Ready after apply).
cluster "byo" {
  kubernetes_version = "1.37.2"
  pod_network        = "none"
}

host "cp-1" {
  address = "10.30.0.11"
  roles   = ["master"]
}

host "worker-1" {
  address = "worker-1.byo.internal"
  roles   = ["compute"]
}
