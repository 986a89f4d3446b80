# A sensitive variable's value never appears in a diagnostic, however it was
# computed: a rejected label value, one built from it with upper(), a taint
# and a kubelet argument all show (sensitive).
variable "team" {
  default   = "Blue Team!"
  sensitive = true
}

cluster "bad" {
  kubernetes_version = "1.37.2"
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master", "compute"]
  labels  = { team = var.team, shout = upper(var.team) }
  taints  = ["team=${var.team}:NoSchedule"]
  kubelet_extra_args = { node-labels-team = "${var.team} --anonymous-auth=true" }
}
