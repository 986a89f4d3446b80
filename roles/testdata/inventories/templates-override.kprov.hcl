# templates_dir replaces the built-in sysctl template with the file of the same name.
cluster "custom" {
  kubernetes_version = "1.37.2"
  templates_dir      = "../templates-override"
}

host "solo" {
  address = "10.1.0.5"
  roles   = ["master"]
}
