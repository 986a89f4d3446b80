cluster "bad" {
  kubernetes_version = "1.37.2"
}

ssh {
  host_key_policy = "accept"
  port            = 70000
  bastion         = ["ops@jump-1:22", "@jump-2"]
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master", "compute"]
}
