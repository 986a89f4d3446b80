package provision

import (
	"context"
	"fmt"
	"path"
	"strings"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/provision/ssh"
)

// executor carries out one step on its host's connection and reports
// whether it changed anything. Each one checks the live state first and
// does nothing when the step's effect is already there, so applying a plan
// again after any interruption converges.
type executor func(ctx context.Context, a *applier, ex ssh.Executor, s plan.Step) (bool, error)

// executors is the table of what every operation of the plan vocabulary
// does on a host; plan's table holds how each one reads. A test checks that
// the two name the same operations.
var executors = map[plan.Op]executor{
	// The transport compares content, mode and owner, and skips a file that matches.
	plan.OpUploadFile: func(ctx context.Context, a *applier, ex ssh.Executor, s plan.Step) (bool, error) {
		return a.upload(ctx, ex, s)
	},
	// The planner emits a command only when the file it follows changed.
	plan.OpRunCommand: func(ctx context.Context, a *applier, ex ssh.Executor, s plan.Step) (bool, error) {
		_, err := a.run(ctx, ex, s.Command, a.opts.CommandTimeout)
		return err == nil, err
	},
	// Started only unless it already runs enabled.
	plan.OpStartService: func(ctx context.Context, a *applier, ex ssh.Executor, s plan.Step) (bool, error) {
		return a.changedBy(ctx, ex, scriptStartService(s.Service))
	},
	// The planner emits a restart only for a changed configuration.
	plan.OpRestartService: func(ctx context.Context, a *applier, ex ssh.Executor, s plan.Step) (bool, error) {
		_, err := a.run(ctx, ex, scriptRestartService(s.Service), a.opts.CommandTimeout)
		return err == nil, err
	},
	// Stopped only while it runs or is enabled.
	plan.OpStopService: func(ctx context.Context, a *applier, ex ssh.Executor, s plan.Step) (bool, error) {
		return a.changedBy(ctx, ex, scriptStopService(s.Service))
	},
	// Only the inventory's data_dir, and only when it exists.
	plan.OpWipeDataDir: func(ctx context.Context, a *applier, ex ssh.Executor, s plan.Step) (bool, error) {
		return a.wipeDataDir(ctx, ex, s)
	},
	// A member with the exact peer URL already listed is done.
	plan.OpEtcdAddLearner: func(ctx context.Context, a *applier, _ ssh.Executor, s plan.Step) (bool, error) {
		return a.etcd.addLearner(ctx, s)
	},
	// A member that already votes is done; "not in sync" is retried.
	plan.OpEtcdPromote: func(ctx context.Context, a *applier, _ ssh.Executor, s plan.Step) (bool, error) {
		return a.etcd.promote(ctx, s)
	},
	// A member no longer listed is done.
	plan.OpEtcdRemove: func(ctx context.Context, a *applier, _ ssh.Executor, s plan.Step) (bool, error) {
		return a.etcd.remove(ctx, s)
	},
	// Only a member that leads hands leadership over.
	plan.OpEtcdMoveLeader: func(ctx context.Context, a *applier, _ ssh.Executor, s plan.Step) (bool, error) {
		return a.etcd.moveLeader(ctx, s)
	},
	// Waits change nothing: they poll until the condition holds or time runs out.
	plan.OpWaitEtcdHealthy: func(ctx context.Context, a *applier, _ ssh.Executor, s plan.Step) (bool, error) {
		return false, a.etcd.waitHealthy(ctx, s)
	},
	plan.OpWaitCaughtUp: func(ctx context.Context, a *applier, _ ssh.Executor, s plan.Step) (bool, error) {
		return false, a.etcd.waitCaughtUp(ctx, s)
	},
	// A host whose kubeadm already ran (its marker file exists) is done.
	plan.OpKubeadmInit: func(ctx context.Context, a *applier, ex ssh.Executor, s plan.Step) (bool, error) {
		return a.kubeadm(ctx, ex, s)
	},
	plan.OpKubeadmJoin: func(ctx context.Context, a *applier, ex ssh.Executor, s plan.Step) (bool, error) {
		return a.kubeadm(ctx, ex, s)
	},
	plan.OpWaitAPIServer: func(ctx context.Context, a *applier, ex ssh.Executor, s plan.Step) (bool, error) {
		return false, a.waitAPIServer(ctx, ex, s)
	},
	// kubectl --overwrite: setting what is already set changes nothing.
	plan.OpLabelNode: func(ctx context.Context, a *applier, _ ssh.Executor, s plan.Step) (bool, error) {
		return a.labelNode(ctx, s)
	},
	plan.OpWaitNodeReady: func(ctx context.Context, a *applier, _ ssh.Executor, s plan.Step) (bool, error) {
		return false, a.waitNodeReady(ctx, s)
	},
	// An identical local copy is left alone.
	plan.OpFetchKubeconfig: func(ctx context.Context, a *applier, ex ssh.Executor, s plan.Step) (bool, error) {
		return a.fetchKubeconfig(ctx, ex, s)
	},
	// The planner emits these only for a join secret that is pending or
	// expiring. Repeating either is harmless: a token with the same ID is
	// replaced (its TTL starts again), and kubeadm replaces the uploaded
	// certificates.
	plan.OpCreateBootstrapToken: func(ctx context.Context, a *applier, ex ssh.Executor, s plan.Step) (bool, error) {
		return a.createBootstrapToken(ctx, ex, s)
	},
	plan.OpUploadCerts: func(ctx context.Context, a *applier, ex ssh.Executor, s plan.Step) (bool, error) {
		return a.uploadCerts(ctx, ex, s)
	},
	// A host whose containerd lists every image of the archive with its
	// digest is done: nothing is uploaded.
	plan.OpImportImages: func(ctx context.Context, a *applier, ex ssh.Executor, s plan.Step) (bool, error) {
		return a.importImages(ctx, ex, s)
	},
	// A data directory with the restore marker of this restore is done.
	plan.OpEtcdRestore: func(ctx context.Context, a *applier, ex ssh.Executor, s plan.Step) (bool, error) {
		return a.etcdRestore(ctx, ex, s)
	},
	// kprov reset: each checks the live state first (kubeadm's files, the
	// images containerd lists, the file, the Node object) and does nothing
	// when it is gone already.
	plan.OpKubeadmReset: func(ctx context.Context, a *applier, ex ssh.Executor, s plan.Step) (bool, error) {
		return a.kubeadmReset(ctx, ex, s)
	},
	plan.OpRemoveImages: func(ctx context.Context, a *applier, ex ssh.Executor, s plan.Step) (bool, error) {
		return a.changedBy(ctx, ex, scriptRemoveImages(s.Images))
	},
	plan.OpRemoveFile: func(ctx context.Context, a *applier, ex ssh.Executor, s plan.Step) (bool, error) {
		return a.removeFile(ctx, ex, s)
	},
	plan.OpDrainNode: func(ctx context.Context, a *applier, ex ssh.Executor, s plan.Step) (bool, error) {
		return a.drainNode(ctx, ex, s)
	},
	plan.OpDeleteNode: func(ctx context.Context, a *applier, ex ssh.Executor, s plan.Step) (bool, error) {
		return a.deleteNode(ctx, ex, s)
	},
	// A marker holding the archive's checksum says it was unpacked already.
	plan.OpUnpackArchive: func(ctx context.Context, a *applier, ex ssh.Executor, s plan.Step) (bool, error) {
		return a.unpackArchive(ctx, ex, s)
	},
}

// unpackArchive unpacks the cni-plugins archive into the CNI binary
// directory, and only there: a plan edited by hand must never turn this
// step into writes elsewhere. The archive is checked on the operator's
// machine before it is sent and on the host before it is unpacked.
func (a *applier) unpackArchive(ctx context.Context, ex ssh.Executor, s plan.Step) (bool, error) {
	if s.Path != plan.CNIBinDir {
		return false, fmt.Errorf("refusing to unpack into %q: archives are unpacked only into %s", s.Path, plan.CNIBinDir)
	}
	res, err := a.run(ctx, ex, scriptArchiveUnpacked(plan.CNIPluginsMarkerPath, s.SHA256), a.opts.CommandTimeout)
	if err != nil {
		return false, err
	}
	if strings.TrimSpace(string(res.Stdout)) == "present" {
		return false, nil
	}
	if _, err := a.run(ctx, ex, scriptMakeDirs([]string{s.Path}), a.opts.CommandTimeout); err != nil {
		return false, fmt.Errorf("create %s: %w", s.Path, err)
	}
	archive := s.Path + "/.kprov-archive.tgz"
	if _, err := a.upload(ctx, ex, plan.Step{Path: archive, Mode: 0o600, Source: s.Source, SHA256: s.SHA256}); err != nil {
		return false, fmt.Errorf("upload %s: %w", archive, err)
	}
	return a.changedBy(ctx, ex, scriptUnpackArchive(archive, s.SHA256, s.Path, plan.CNIPluginsMarkerPath))
}

// etcdRestore restores the snapshot into the member's data directory, and
// only into the inventory's data_dir (as wipeDataDir): a plan edited by hand
// must never turn this step into writes elsewhere. The snapshot is checked
// against its SHA-256 on the operator's machine before it is sent, and
// etcdutl checks etcd's own hash of it on the host.
func (a *applier) etcdRestore(ctx context.Context, ex ssh.Executor, s plan.Step) (bool, error) {
	if err := a.checkDataDir(s.Path, "restore into"); err != nil {
		return false, err
	}
	res, err := a.run(ctx, ex, scriptEtcdRestored(s.Path, plan.EtcdRestoreMarkerPath, s.ClusterToken), a.opts.CommandTimeout)
	if err != nil {
		return false, err
	}
	if strings.TrimSpace(string(res.Stdout)) == "restored" {
		return false, nil
	}
	if _, err := a.run(ctx, ex, scriptMakeDirs([]string{path.Dir(plan.EtcdRestoreSnapshotPath)}), a.opts.CommandTimeout); err != nil {
		return false, fmt.Errorf("create %s: %w", path.Dir(plan.EtcdRestoreSnapshotPath), err)
	}
	if a.inv.Topology.EtcdMode == inventory.EtcdStacked {
		return a.etcdRestoreStacked(ctx, ex, s)
	}
	if _, err := a.upload(ctx, ex, plan.Step{Path: plan.EtcdRestoreSnapshotPath, Mode: 0o600, Secret: true, Source: s.Source, SHA256: s.SHA256}); err != nil {
		return false, fmt.Errorf("upload the snapshot to %s: %w", plan.EtcdRestoreSnapshotPath, err)
	}
	return a.changedBy(ctx, ex, scriptEtcdRestore(s, plan.EtcdRestoreMarkerPath, plan.EtcdRestoreSnapshotPath))
}

// etcdRestoreStacked restores a stacked member, whose host has no etcdutl
// (kubeadm runs etcd from an image): etcdutl's own Go code restores the
// snapshot on the operator's machine with the step's member list, token,
// revision bump and compaction mark, exactly as the etcdutl command line
// does for an external member; the data directory goes to the host as a
// gzipped tar, checked against its SHA-256 there, and is moved into place
// by the same guarded script (scriptEtcdRestoreArchive).
func (a *applier) etcdRestoreStacked(ctx context.Context, ex ssh.Executor, s plan.Step) (bool, error) {
	archive, sum, cleanup, err := RestoreDataArchive(s)
	if err != nil {
		return false, fmt.Errorf("restore the snapshot for %s on this machine: %w", s.Member, err)
	}
	defer cleanup()
	if _, err := a.upload(ctx, ex, plan.Step{Path: plan.EtcdRestoreArchivePath, Mode: 0o600, Secret: true, Source: archive, SHA256: sum}); err != nil {
		return false, fmt.Errorf("upload the restored data directory to %s: %w", plan.EtcdRestoreArchivePath, err)
	}
	return a.changedBy(ctx, ex, scriptEtcdRestoreArchive(s, plan.EtcdRestoreMarkerPath, plan.EtcdRestoreArchivePath, sum))
}
