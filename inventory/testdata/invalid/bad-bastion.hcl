# A bastion's host is checked like an address; its user may not hold '@',
# so kprov and the SSH transport agree on where the host starts.
cluster "bad" {
  kubernetes_version     = "1.37.2"
  control_plane_endpoint = "[2001:db8::10]:6443"
}

ssh {
  bastion = ["ops@jump.bad.internal:22", "[fe80::1%eth0]:22", "2001:db8::2"]
}

host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master"]
  ssh {
    bastion = ["ops@evil@jump.bad.internal"]
  }
}

host "cp-2" {
  address = "192.0.2.12"
  roles   = ["master"]
  ssh {
    bastion = "ops@192.0.2.011:22"
  }
}

host "cp-3" {
  address = "192.0.2.13"
  roles   = ["master"]
  ssh {
    bastion = "[2001:db8::1%eth0]:22"
  }
}

host "worker-1" {
  address = "192.0.2.21"
  roles   = ["compute"]
  ssh {
    bastion = "jump.bad.internal:+22"
  }
}

host "worker-2" {
  address = "192.0.2.22"
  roles   = ["compute"]
  ssh {
    bastion = "op s@jump.bad.internal"
  }
}

host "worker-3" {
  address = "192.0.2.23"
  roles   = ["compute"]
  ssh {
    bastion = "jump.bad.internal\n* ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKprovattacker"
  }
}
