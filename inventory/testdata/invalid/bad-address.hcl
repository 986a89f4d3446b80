# Addresses are IP literals or DNS names, nothing else: each host but the
# last one is refused.
cluster "bad" {
  kubernetes_version     = "1.37.2"
  control_plane_endpoint = "api.bad.internal:6443"
}

# A newline would end the known_hosts line kprov writes under accept-new and
# start another one that trusts any host.
host "cp-1" {
  address = "fe80::1%lo\n* ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKprovattacker"
  roles   = ["master"]
}

host "cp-2" {
  address = "::1%lo"
  roles   = ["master"]
}

host "cp-3" {
  address = "fe80::13%eth0,*"
  roles   = ["master"]
}

# Numeric-looking names are read as some other IPv4 address by ssh and getaddrinfo.
host "worker-1" {
  address = "192.0.2.011"
  roles   = ["compute"]
}

host "worker-2" {
  address = "3221225995"
  roles   = ["compute"]
}

host "worker-3" {
  address = "0x7f.1"
  roles   = ["compute"]
}

host "worker-4" {
  address = " 192.0.2.14"
  roles   = ["compute"]
}

host "worker-5" {
  address = "node_5.bad.internal"
  roles   = ["compute"]
}

# Valid: a link-local address with its interface.
host "worker-6" {
  address = "fe80::16%eth0"
  roles   = ["compute"]
}
