# A containerd block at the top level, and a host's own laid over it field by field.
cluster "poc" {
  kubernetes_version = "1.37.2"
}

containerd {
  cgroup_driver          = "cgroupfs"
  restrict_oom_score_adj = true
}

host "cp-1" {
  address = "192.0.2.10"
  roles   = ["master"]
}

host "worker-1" {
  address = "192.0.2.21"
  roles   = ["compute"]
  containerd {
    cgroup_driver = "systemd"
    snapshotter   = "native"
  }
}
