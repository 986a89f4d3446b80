//go:build e2e

package e2e

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/lab"
)

// TestFiguresNetwork measures, for scripts/apply-figures (which sets
// KPROV_FIGURES=1; the suite skips it), on the topology in
// KPROV_FIGURES_TOPOLOGY (default ha-stacked):
//
//   - the time from fresh machines to every node Ready and CoreDNS
//     answering a pod (apply, then the netcheck DaemonSet, then a name
//     resolved from a pod);
//   - the node-local endpoint's failover: each master in turn is stopped
//     (plug pulled) while this process asks /readyz through the proxy's
//     code every 250 ms; the longest gap in answers, then the master is
//     started again and waited for.
//
// It prints one "figure:" line per measurement.
func TestFiguresNetwork(t *testing.T) {
	if os.Getenv("KPROV_FIGURES") != "1" {
		t.Skip("figures only: scripts/apply-figures runs it with KPROV_FIGURES=1")
	}
	topology := os.Getenv("KPROV_FIGURES_TOPOLOGY")
	if topology == "" {
		topology = "ha-stacked"
	}
	specs, err := lab.TopologyMachines(topology)
	if err != nil {
		t.Fatal(err)
	}
	l := UpLab(t, specs)
	inv := l.InventoryPath()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	var masters, nodeNames []string
	for _, m := range l.Machines() {
		if slices.Contains(m.Roles, inventory.RoleMaster) {
			masters = append(masters, m.Name)
		}
		if slices.ContainsFunc(m.Roles, func(r inventory.Role) bool { return r != inventory.RoleEtcd }) {
			nodeNames = append(nodeNames, m.Name)
		}
	}

	start := time.Now()
	if out, err := kprovErr(t, "-f", inv, "apply", "--auto-approve"); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	applied := time.Since(start)
	kc := adminKubeconfig(t, l, inv)
	kubectlApply(t, ctx, kc, podServerManifest)
	pods := waitPodServers(t, ctx, kc, nodeNames)
	for deadline := time.Now().Add(5 * time.Minute); ; {
		out, err := kubectlTry(t, ctx, kc, "exec", "-n", "default", pods[0].name, "--", "/usr/local/bin/netcheck", "resolve", "kubernetes.default.svc")
		if err == nil && strings.TrimSpace(string(out)) != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CoreDNS did not answer from %s: %v\n%s", pods[0].name, err, out)
		}
		time.Sleep(time.Second)
	}
	t.Logf("figure: %s, %d machines: fresh to every node Ready %s (apply), and CoreDNS answering a pod %s",
		topology, len(specs), applied.Round(time.Second), time.Since(start).Round(time.Second))

	for _, m := range masters {
		others := slices.DeleteFunc(slices.Clone(masters), func(o string) bool { return o == m })
		probe := startEndpointProbe(t, ctx, l, inv, masters)
		for deadline := time.Now().Add(time.Minute); !probe.answeredSince(time.Time{}); {
			if time.Now().After(deadline) {
				t.Fatal("no answer through the in-process proxy before the stop")
			}
			time.Sleep(250 * time.Millisecond)
		}
		stopped := time.Now()
		if err := l.Stop(ctx, m, 0); err != nil {
			t.Fatal(err)
		}
		// Answers again, then 10 s more to see that they go on.
		for deadline := stopped.Add(time.Minute); !probe.answeredSince(stopped.Add(10 * time.Second)); {
			if time.Now().After(deadline) {
				t.Fatalf("no answer within a minute of stopping %s", m)
			}
			time.Sleep(250 * time.Millisecond)
		}
		probe.stop()
		gap, failed := probe.longestGap(stopped)
		t.Logf("figure: %s stopped (%s still up): longest gap in /readyz answers through the endpoint %s, failed asks by reason %v",
			m, strings.Join(others, ", "), gap.Round(10*time.Millisecond), failed)
		if err := l.Start(ctx, m, 3*time.Minute); err != nil {
			t.Fatal(err)
		}
		viaOther := kubeconfigVia(t, kc, mustAddress(t, l, others[0])+":6443")
		waitNodeReady(t, ctx, viaOther, m, true, 5*time.Minute)
	}
}

// mustAddress is a lab machine's address.
func mustAddress(t *testing.T, l *lab.Lab, name string) string {
	t.Helper()
	m, err := l.Machine(name)
	if err != nil {
		t.Fatal(err)
	}
	return m.Address.String()
}
