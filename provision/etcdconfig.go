package provision

import (
	"strings"
)

// etcdConfigIdentity is what a member's config file says about who it is and
// which cluster it joined, read when no member answers.
type etcdConfigIdentity struct {
	Name           string
	PeerURL        string            // first of initial-advertise-peer-urls
	InitialCluster map[string]string // name -> peer URL
}

// parseEtcdConfigIdentity reads the few top-level scalars it needs from an
// etcd YAML config (templates/etcd.yaml.tmpl: quoted values, comments) line
// by line; a full YAML parser would buy nothing for the flat "key: value"
// lines kprov itself renders.
func parseEtcdConfigIdentity(b []byte) etcdConfigIdentity {
	var id etcdConfigIdentity
	for _, line := range strings.Split(string(b), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok || strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t") || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.Index(val, " #"); i >= 0 {
			val = val[:i]
		}
		val = strings.Trim(strings.TrimSpace(val), `"'`)
		switch strings.TrimSpace(key) {
		case "name":
			id.Name = val
		case "initial-advertise-peer-urls":
			id.PeerURL, _, _ = strings.Cut(val, ",")
			id.PeerURL = strings.TrimSpace(id.PeerURL)
		case "initial-cluster":
			id.InitialCluster = map[string]string{}
			for _, kv := range strings.Split(val, ",") {
				if n, u, ok := strings.Cut(strings.TrimSpace(kv), "="); ok {
					id.InitialCluster[n] = u
				}
			}
		}
	}
	return id
}
