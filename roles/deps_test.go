package roles

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPlannerLinksNoTransport keeps the planner pure: roles renders and plans
// from data, so it must never link the SSH transport, SFTP, the etcd client
// or gRPC. Those belong to provision, which carries the plan out.
func TestPlannerLinksNoTransport(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/kprov/kprov/roles", "github.com/kprov/kprov/provision/plan").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list printed %d packages; want the dependency list", len(deps))
	}
	forbidden := []string{"golang.org/x/crypto/ssh", "github.com/pkg/sftp", "go.etcd.io/etcd/client/v3", "google.golang.org/grpc", "github.com/kprov/kprov/provision"}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f+"/") && !strings.HasPrefix(d, "github.com/kprov/kprov/provision/plan") && !strings.HasPrefix(d, "github.com/kprov/kprov/provision/pki") {
				t.Errorf("roles depends on %s (forbidden: %s)", d, f)
			}
		}
	}
}
