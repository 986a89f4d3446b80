package provision

import (
	"strings"
)

// EtcdConfigPath is where kprov writes an external etcd member's configuration.
const EtcdConfigPath = "/etc/etcd/etcd.yaml"

// NormalizeEtcdConfig drops the settings etcd reads only when it bootstraps an
// empty data directory (initial-cluster, initial-cluster-state,
// initial-cluster-token), so two configurations that differ only there compare
// equal: such a change is written without restarting the member.
//
// It lives here rather than in roles because both the planner (roles, which
// imports provision) and fact gathering must hash exactly the same bytes.
func NormalizeEtcdConfig(b []byte) []byte {
	var keep []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "initial-cluster") {
			continue
		}
		keep = append(keep, line)
	}
	return []byte(strings.Join(keep, "\n"))
}
