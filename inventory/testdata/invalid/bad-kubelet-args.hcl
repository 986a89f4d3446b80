# kubeadm writes kubelet_extra_args into the kubelet's flags file as
# --name=value words: a name or value that is not one word adds flags.
cluster "bad" {
  kubernetes_version = "1.37.2"
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master", "compute"]
  kubelet_extra_args = {
    ""                  = "x"
    "max-pods\n--anonymous-auth" = "true"
    "--max-pods"        = "200"
    "node-labels"       = "node-role.kubernetes.io/master="
    "anonymous-auth"    = "true"
    "v"                 = "2 --anonymous-auth=true"
    "feature-gates"     = "A=true\"\nKUBELET_EXTRA_ARGS=\"--anonymous-auth=true"
    "node-ip"           = "192.0.2.11,192.0.2.12"
    "eviction-hard"     = "memory.available<100Mi,nodefs.available<10%"
  }
}
