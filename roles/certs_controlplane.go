package roles

import (
	"fmt"
	"slices"

	"github.com/kprov/kprov/internal/shell"
	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
)

// kubeadmPATH puts kubeadm's directory first, as kprov installs it there.
const kubeadmPATH = `PATH="/usr/local/sbin:/usr/local/bin:$PATH"; export PATH; `

// RenewKubeadmCertsCommand renews every certificate kubeadm issued on a
// master (its own certificates and the ones in its kubeconfig files) from
// the cluster CA on the master. kubelet.conf is not among them: the
// kubelet renews its own client certificate (rotateCertificates). With
// external etcd kubeadm leaves the etcd certificates alone: kprov issues
// those.
const RenewKubeadmCertsCommand = kubeadmPATH + "kubeadm certs renew all"

// RestartComponentCommand restarts one of a master's control-plane
// components so that it reads the certificates again: its process (the
// container's main process, found by its command line) is sent SIGTERM,
// the kubelet starts the static pod's container again, and the command
// returns once a process of that name with another PID runs, or fails
// after 150 s naming what to look at. The health wait that follows in the
// plan says whether the new process serves.
func RestartComponentCommand(component string) string {
	pattern := shell.Quote("^" + component + "( |$)")
	name := shell.Quote(component)
	return fmt.Sprintf(`old=$(pgrep -o -f %[1]s) || { echo %[2]s' is not running' >&2; exit 1; }
kill "$old"
i=0
while :; do
  new=$(pgrep -n -f %[1]s || :)
  if [ -n "$new" ] && [ "$new" != "$old" ]; then echo "restarted: pid $old, now $new"; exit 0; fi
  i=$((i + 1))
  if [ "$i" -gt 600 ]; then echo %[2]s' did not start again within 150s: see journalctl -u kubelet' >&2; exit 1; fi
  sleep 0.25
done`, pattern, name)
}

// RenewControlPlaneStages renews kubeadm's certificates on the named
// masters, one master at a time: kubeadm certs renew, then each
// control-plane component restarted and checked before the next (with
// stacked etcd its member first, only while every member is healthy, and
// every member healthy again before the API server restarts; then the
// API server, live again before the controller manager and the scheduler
// restart). The masters are taken in inventory
// order with the first master last, and the admin kubeconfig in the state
// directory is fetched again from it at the end (its renewed client
// certificate).
func RenewControlPlaneStages(inv *inventory.Inventory, masters []string) []plan.Stage {
	order := slices.DeleteFunc(slices.Clone(inv.Topology.Masters), func(m string) bool { return !slices.Contains(masters, m) })
	if len(order) == 0 {
		return nil
	}
	first := inv.Topology.Masters[0]
	if i := slices.Index(order, first); i >= 0 {
		order = append(slices.Delete(order, i, i+1), first)
	}
	stacked := inv.Topology.EtcdMode == inventory.EtcdStacked
	var stages []plan.Stage
	for _, m := range order {
		steps := []plan.Step{
			{Op: plan.OpWaitAPIServer, Host: m, Reason: "a master's control plane restarts only while its API server answers"},
			{Op: plan.OpRunCommand, Host: m, Command: RenewKubeadmCertsCommand,
				Reason: "kubeadm renews the master's certificates and kubeconfig files from the cluster CA; the running components keep the old ones until they restart"},
		}
		restart := func(component, why string) {
			steps = append(steps, plan.Step{Op: plan.OpRunCommand, Host: m, Command: RestartComponentCommand(component), Reason: why})
		}
		if stacked {
			steps = append(steps, plan.Step{Op: plan.OpWaitEtcdHealthy, Host: m, Voters: slices.Clone(inv.Topology.Masters),
				Reason: "a member restarts only while every other member is healthy"})
			restart("etcd", "the stacked etcd member reads its renewed server and peer certificates at start")
			steps = append(steps, plan.Step{Op: plan.OpWaitEtcdHealthy, Host: m, Voters: slices.Clone(inv.Topology.Masters), Starting: []string{m},
				Reason: "every member healthy again before the API server restarts"})
		}
		restart("kube-apiserver", "the API server reads its renewed serving and client certificates at start")
		steps = append(steps, plan.Step{Op: plan.OpWaitAPIServer, Host: m, Reason: "the restarted API server must answer before anything else restarts"})
		restart("kube-controller-manager", "the controller manager reads its renewed kubeconfig at start")
		restart("kube-scheduler", "the scheduler reads its renewed kubeconfig at start")
		if m == first {
			steps = append(steps, plan.Step{Op: plan.OpFetchKubeconfig, Host: m, Path: plan.AdminKubeconfigPath,
				Reason: "the admin kubeconfig in the state directory gets the renewed client certificate"})
		}
		stages = append(stages, plan.Stage{Kind: plan.StageCertsControlPlane, Target: m, Title: "renewing kubeadm's certificates on " + m, Parallel: 1, Steps: steps})
	}
	return stages
}
