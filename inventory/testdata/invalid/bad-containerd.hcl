cluster "poc" {
  kubernetes_version = "1.37.2"
}

containerd {
  cgroup_driver = "systemdd"
}

host "cp-1" {
  address = "192.0.2.10"
  roles   = ["master"]
  containerd {
    snapshotter = "zfs"
  }
  containerd {
    restrict_oom_score_adj = false
  }
}
