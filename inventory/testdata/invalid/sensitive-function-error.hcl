# A function's error about a sensitive value would quote it: the detail is
# withheld, and HCL's "with var.network as ..." line is left out.
variable "network" {
  default   = "10.1.0.0/33"
  sensitive = true
}

cluster "bad" {
  kubernetes_version = "1.37.2"
}

host "cp-1" {
  address = cidrhost(var.network, 1)
  roles   = ["master", "compute"]
}
