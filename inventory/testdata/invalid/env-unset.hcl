cluster "bad" {
  kubernetes_version = "1.37.2"
}

host "cp-1" {
  address = env("KPROV_TEST_UNSET")
  roles   = ["master"]
}
