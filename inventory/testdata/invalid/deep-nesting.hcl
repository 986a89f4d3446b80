# Nesting past kprov's limit is refused before HCL parses it, at the line
# where the limit is passed; the snippet is left out, since such a line can
# be megabytes long.
cluster "bad" {
  kubernetes_version = "1.37.2"
}

locals {
  deep = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master", "compute"]
}
