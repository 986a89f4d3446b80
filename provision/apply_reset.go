package provision

import (
	"context"
	"fmt"
	"strings"

	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/provision/ssh"
)

// The executors of kprov reset's operations. Each refuses a step a plan
// edited by hand could turn against anything but what kprov put there.

// kubeadmReset runs kubeadm reset, and only kubeadm reset.
func (a *applier) kubeadmReset(ctx context.Context, ex ssh.Executor, s plan.Step) (bool, error) {
	if s.Command != "kubeadm reset -f" && s.Command != "kubeadm reset -f --skip-phases remove-etcd-member" {
		return false, fmt.Errorf("refusing to run %q as a kubeadm-reset step", s.Command)
	}
	res, err := a.run(ctx, ex, scriptKubeadmReset(s.Command), a.opts.KubeadmTimeout)
	if err != nil {
		return false, err
	}
	return changedOutput(res), nil
}

// removeFile removes a file kprov put on the host, and only a path
// plan.Removable accepts; a binary of the artifacts block only with its
// checksum.
func (a *applier) removeFile(ctx context.Context, ex ssh.Executor, s plan.Step) (bool, error) {
	if !plan.Removable(s.Path) {
		return false, fmt.Errorf("refusing to remove %q: kprov reset removes only the files kprov puts on a host", s.Path)
	}
	if strings.HasPrefix(s.Path, plan.BinDir+"/") && s.SHA256 == "" {
		return false, fmt.Errorf("refusing to remove %q without the artifact's checksum: a binary there may not be kprov's", s.Path)
	}
	return a.changedBy(ctx, ex, scriptRemoveKprovFile(s.Path, s.SHA256, plan.EmptyDirsAbove(s.Path)))
}

// deleteNode runs kubectl on the step's host, a master that stays.
func (a *applier) deleteNode(ctx context.Context, ex ssh.Executor, s plan.Step) (bool, error) {
	changed, err := a.changedBy(ctx, ex, scriptDeleteNodeIfPresent(s.Node))
	if err != nil {
		return false, fmt.Errorf("delete node %s: %w", s.Node, err)
	}
	return changed, nil
}

// changedOutput reports whether a script that checks the live state itself
// said it changed something.
func changedOutput(res ssh.Result) bool { return strings.Contains(string(res.Stdout), "changed") }
