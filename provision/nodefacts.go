package provision

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/provision/ssh"
)

// kubeNodeList is the part of `kubectl get nodes -o json` kprov reads.
type kubeNodeList struct {
	Items []struct {
		Metadata struct {
			Name   string            `json:"name"`
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec struct {
			Taints []struct {
				Key    string `json:"key"`
				Value  string `json:"value"`
				Effect string `json:"effect"`
			} `json:"taints"`
		} `json:"spec"`
		Status struct {
			Conditions []struct {
				Type   string `json:"type"`
				Status string `json:"status"`
			} `json:"conditions"`
		} `json:"status"`
	} `json:"items"`
}

// GatherNodes reads every node's labels and taints through kubectl on a
// master that runs the control plane, so the planner sets labels and taints
// only where they differ.
func GatherNodes(ctx context.Context, master ssh.Executor) (map[string]*plan.NodeFacts, error) {
	res, err := master.Run(ctx, ssh.Command{Cmd: scriptListNodes, MaxOutput: 64 << 20})
	if err != nil {
		return nil, fmt.Errorf("%s: list nodes: %w", master.Name(), err)
	}
	if res.Truncated {
		return nil, fmt.Errorf("%s: list nodes: output over 64 MiB", master.Name())
	}
	return parseNodes(res.Stdout)
}

func parseNodes(b []byte) (map[string]*plan.NodeFacts, error) {
	var list kubeNodeList
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("list nodes: kubectl output is not a node list: %w", err)
	}
	out := make(map[string]*plan.NodeFacts, len(list.Items))
	for _, it := range list.Items {
		nf := &plan.NodeFacts{Labels: it.Metadata.Labels}
		if nf.Labels == nil {
			nf.Labels = map[string]string{}
		}
		for _, t := range it.Spec.Taints {
			// The same key[=value]:Effect form the inventory and the plan use.
			s := t.Key
			if t.Value != "" {
				s += "=" + t.Value
			}
			nf.Taints = append(nf.Taints, s+":"+t.Effect)
		}
		sort.Strings(nf.Taints)
		for _, c := range it.Status.Conditions {
			nf.Ready = nf.Ready || c.Type == "Ready" && c.Status == "True"
		}
		out[it.Metadata.Name] = nf
	}
	return out, nil
}
