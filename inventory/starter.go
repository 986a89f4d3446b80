package inventory

import (
	"bytes"
	"embed"
	"fmt"
	"strings"
	"text/template"
)

//go:embed starters/starter.hcl.tmpl
var starterFS embed.FS

var starterTemplate = template.Must(template.ParseFS(starterFS, "starters/starter.hcl.tmpl"))

// StarterTopologies are the shapes `kprov init --topology` can write.
var StarterTopologies = []string{"single", "ha-stacked", "ha-external", "openshift"}

type starterGroup struct {
	Comment string
	Prefix  string
	Count   int
	Offset  int
	Roles   string
}

// Starter returns a commented inventory for one of StarterTopologies that
// validates as it is.
func Starter(topology string) ([]byte, error) {
	master := starterGroup{"Masters run the control plane.", "master", 3, 10, `"master"`}
	compute := starterGroup{"Compute hosts run application workloads.", "compute", 2, 100, `"compute"`}
	data := struct {
		Topology, Cluster, Endpoint string
		Groups                      []starterGroup
	}{Topology: topology, Cluster: "example", Endpoint: "api.example.internal:6443"}
	switch topology {
	case "single":
		data.Endpoint = ""
		data.Groups = []starterGroup{{"One host runs everything; the control-plane taint is removed so it takes workloads.", "node", 1, 10, `"master"`}}
	case "ha-stacked":
		master.Comment = "Masters run the control plane and, stacked, one etcd member each (an odd number)."
		master.Roles = `"master", "etcd"`
		data.Groups = []starterGroup{master, compute}
	case "ha-external":
		data.Groups = []starterGroup{
			master,
			{"A separate etcd cluster (an odd number of members), managed by kprov.", "etcd", 3, 20, `"etcd"`},
			compute,
		}
	case "openshift":
		data.Groups = []starterGroup{
			master,
			{"Infra hosts run the registry, ingress routing, logging and metrics (3 or more for production).", "infra", 3, 30, `"infra"`},
			compute,
		}
	default:
		return nil, fmt.Errorf("unknown topology %q: choose one of %s", topology, strings.Join(StarterTopologies, ", "))
	}
	var buf bytes.Buffer
	if err := starterTemplate.Execute(&buf, data); err != nil {
		return nil, fmt.Errorf("render starter inventory: %w", err)
	}
	return buf.Bytes(), nil
}
