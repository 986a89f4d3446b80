package provision

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/provision/ssh"
)

func TestGatherNodes(t *testing.T) {
	list := `{"items":[
 {"metadata":{"name":"master-1","labels":{"kubernetes.io/hostname":"master-1","node-role.kubernetes.io/control-plane":""}},
  "spec":{"taints":[{"key":"node-role.kubernetes.io/control-plane","effect":"NoSchedule"}]},
  "status":{"conditions":[{"type":"MemoryPressure","status":"False"},{"type":"Ready","status":"True"}]}},
 {"metadata":{"name":"infra-1","labels":{"node-role.kubernetes.io/infra":""}},
  "spec":{"taints":[{"key":"node-role.kubernetes.io/infra","effect":"NoSchedule"},{"key":"dedicated","value":"ops","effect":"NoExecute"}]},
  "status":{"conditions":[{"type":"Ready","status":"False"},{"type":"DiskPressure","status":"True"}]}},
 {"metadata":{"name":"compute-1"},"spec":{}}]}`
	host := newFakeHost(t, "master-1", fakeRun{cmd: scriptListNodes, stdout: list})
	nodes, err := GatherNodes(context.Background(), host)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]*plan.NodeFacts{
		"master-1": {Labels: map[string]string{"kubernetes.io/hostname": "master-1", "node-role.kubernetes.io/control-plane": ""},
			Taints: []string{"node-role.kubernetes.io/control-plane:NoSchedule"}, Ready: true},
		"infra-1":   {Labels: map[string]string{"node-role.kubernetes.io/infra": ""}, Taints: []string{"dedicated=ops:NoExecute", "node-role.kubernetes.io/infra:NoSchedule"}},
		"compute-1": {Labels: map[string]string{}},
	}
	if !reflect.DeepEqual(nodes, want) {
		t.Fatalf("got %+v", nodes)
	}

	broken := newFakeHost(t, "master-1", fakeRun{cmd: scriptListNodes, err: &ssh.ExitError{Command: scriptListNodes, Status: 1, Stderr: "connection refused"}})
	if _, err := GatherNodes(context.Background(), broken); err == nil || !errors.As(err, new(*ssh.ExitError)) {
		t.Fatalf("a failing kubectl must surface as the host's exit error, got %v", err)
	}
	garbage := newFakeHost(t, "master-1", fakeRun{cmd: scriptListNodes, stdout: "error: You must be logged in"})
	if _, err := GatherNodes(context.Background(), garbage); err == nil {
		t.Fatal("output that is not a node list must be an error")
	}
}
