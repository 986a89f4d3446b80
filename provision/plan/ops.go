package plan

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
)

// Op is the kind of operation a step performs. Every operation is
// idempotent when applied: it checks the live state first and does nothing
// when its effect is already there. What each one does on a host is in
// provision's table of executors, keyed by the same Op.
type Op string

// The operations a plan can contain.
const (
	OpUploadFile      Op = "upload-file"       // write a file atomically (temp name, fsync, rename)
	OpRunCommand      Op = "run-command"       // run a command on the host
	OpStartService    Op = "start-service"     // enable and start a systemd unit
	OpRestartService  Op = "restart-service"   // restart a systemd unit
	OpStopService     Op = "stop-service"      // stop and disable a systemd unit
	OpWipeDataDir     Op = "wipe-data-dir"     // remove an etcd data directory
	OpEtcdAddLearner  Op = "etcd-add-learner"  // MemberAddAsLearner with the member's peer URL
	OpEtcdPromote     Op = "etcd-promote"      // MemberPromote once the learner has caught up
	OpEtcdRemove      Op = "etcd-remove"       // MemberRemove by the member's peer URL
	OpEtcdMoveLeader  Op = "etcd-move-leader"  // move leadership away from a member, if it leads
	OpWaitEtcdHealthy Op = "wait-etcd-healthy" // every voting member answers and the cluster has one leader
	OpWaitCaughtUp    Op = "wait-etcd-caught-up"
	OpKubeadmInit     Op = "kubeadm-init"
	OpKubeadmJoin     Op = "kubeadm-join"
	OpWaitAPIServer   Op = "wait-apiserver-healthy"
	OpLabelNode       Op = "label-taint-node"
	// OpWaitNodeReady waits until the Node named Host reports Ready
	// through the API (read with kubectl on a master).
	OpWaitNodeReady   Op = "wait-node-ready"
	OpFetchKubeconfig Op = "fetch-kubeconfig"
	// OpCreateBootstrapToken creates the step's bootstrap token (Content)
	// on the cluster with kubeadm on a master, replacing any token with its ID.
	OpCreateBootstrapToken Op = "create-bootstrap-token"
	// OpUploadCerts uploads the control-plane certificates again with
	// kubeadm on a master, encrypted with the certificate key of the init
	// configuration at Path (the step's Content is that key).
	OpUploadCerts Op = "upload-certs"
	// OpImportImages imports the image archive Source (SHA256) into
	// containerd's k8s.io namespace unless the host already lists every one
	// of the step's Images with its digest: uploaded to Path, checked on the
	// host, imported, checked again, removed.
	OpImportImages Op = "import-images"
	// OpUnpackArchive uploads an archive (Source, checked against SHA256),
	// extracts it in a private directory and moves each top-level file into
	// Path; a marker file in Path holding the archive's SHA-256 makes a
	// second run do nothing.
	OpUnpackArchive Op = "unpack-archive"
	// OpEtcdRestore restores the etcd snapshot Source (SHA256) into the
	// data directory Path as member Member (PeerURL) of a new cluster
	// (InitialCluster, ClusterToken) with etcdutl snapshot restore, unless
	// the restore marker already holds ClusterToken and Path holds a
	// member's data (kprov restore run again).
	OpEtcdRestore Op = "etcd-restore"
	// OpKubeadmReset runs the step's Command (kubeadm reset -f, with
	// --skip-phases remove-etcd-member when every member goes) on a host
	// that holds kubeadm's state: kubelet.conf, bootstrap-kubelet.conf, the
	// API server manifest, /var/lib/kubelet/config.yaml, or a running kubelet.
	OpKubeadmReset Op = "kubeadm-reset"
	// OpRemoveImages removes from containerd's k8s.io namespace the step's
	// Images that the host lists with the same digest: the ones kprov
	// imported from the inventory's archives, and no others.
	OpRemoveImages Op = "remove-images"
	// OpRemoveFile removes the file Path kprov put on the host (only a path
	// Removable accepts), and when SHA256 is set only while the file has
	// that checksum (a binary of the artifacts block); then the directories
	// of KprovDirs above it that are left empty.
	OpRemoveFile Op = "remove-file"
	// OpDrainNode cordons the Kubernetes node Node and evicts its pods
	// with kubectl drain on the step's Host (a master that stays, with the
	// admin kubeconfig): PodDisruptionBudgets are respected, DaemonSet pods
	// stay, and a pod without a controller stops it (nothing is forced).
	OpDrainNode Op = "drain-node"
	// OpDeleteNode deletes the Node object Node through the API (kubectl
	// on the step's Host, a master that stays).
	OpDeleteNode Op = "delete-node"
)

// operation is what the plan knows of an Op: how a step of it reads on one
// line (after the op's name), and whether it changes a host or only waits.
type operation struct {
	describe func(Step) string // nil: the op's name says it all
	wait     bool              // reads and waits, never changes a host
	// plural names a run of n > 1 steps of the op in a grouped plan, e.g.
	// "upload-file ×9"; nil lists each step's description instead.
	plural func(n int) string
}

// brief says what a run of consecutive steps of this op does.
func (o operation) brief(run []Step) string {
	if len(run) > 1 && o.plural != nil {
		return o.plural(len(run))
	}
	var descs []string
	for _, s := range run {
		if o.describe == nil {
			descs = append(descs, "")
			continue
		}
		descs = append(descs, o.describe(s))
	}
	out := string(run[0].Op)
	if d := strings.TrimSpace(strings.Join(descs, ", ")); d != "" {
		out += " " + d
	}
	return out
}

// operations is the table of every operation the planner may emit.
var operations = map[Op]operation{
	OpUploadFile:      {describe: func(s Step) string { return fmt.Sprintf("%s (%04o)", s.Path, uint32(s.Mode)) }, plural: count("upload-file")},
	OpRunCommand:      {describe: func(s Step) string { return fmt.Sprintf("%q", s.Command) }, plural: count("run-command")},
	OpStartService:    {describe: service},
	OpRestartService:  {describe: service},
	OpStopService:     {describe: service},
	OpWipeDataDir:     {describe: func(s Step) string { return s.Path }},
	OpEtcdAddLearner:  {describe: func(s Step) string { return s.Member + " " + s.PeerURL }},
	OpEtcdPromote:     {describe: member},
	OpEtcdRemove:      {describe: memberAt},
	OpEtcdMoveLeader:  {describe: memberAt},
	OpWaitCaughtUp:    {describe: member, wait: true},
	OpWaitEtcdHealthy: {describe: voters, wait: true},
	OpKubeadmInit:     {},
	OpKubeadmJoin:     {},
	OpWaitAPIServer:   {wait: true},
	OpLabelNode:       {},
	OpWaitNodeReady:   {wait: true, plural: count("wait-node-ready")},
	OpFetchKubeconfig: {},
	// The secret itself is never described: only what carries it.
	OpCreateBootstrapToken: {},
	OpUploadCerts:          {describe: func(s Step) string { return "--config " + s.Path }},
	OpUnpackArchive:        {describe: func(s Step) string { return "into " + s.Path }},
	OpImportImages:         {describe: importImages, plural: count("import-images")},
	OpKubeadmReset:         {describe: func(s Step) string { return strings.TrimPrefix(s.Command, "kubeadm reset ") }},
	OpRemoveImages:         {describe: func(s Step) string { return fmt.Sprintf("(%d kprov imported)", len(s.Images)) }},
	OpRemoveFile:           {describe: func(s Step) string { return s.Path }},
	OpDrainNode:            {describe: func(s Step) string { return s.Node }},
	OpDeleteNode:           {describe: func(s Step) string { return s.Node }},
	OpEtcdRestore: {describe: func(s Step) string {
		return fmt.Sprintf("%s into %s as %s %s", path.Base(s.Source), s.Path, s.Member, s.PeerURL)
	}},
}

// importImages names the archive by its file name and the images it brings.
func importImages(s Step) string {
	refs := make([]string, len(s.Images))
	for i, r := range s.Images {
		refs[i] = r.Ref
	}
	return fmt.Sprintf("%s (%s)", path.Base(s.Source), strings.Join(refs, ", "))
}

// count names n steps of an op by the op's name and the number.
func count(op string) func(int) string {
	return func(n int) string { return fmt.Sprintf("%s ×%d", op, n) }
}

func service(s Step) string { return s.Service }
func member(s Step) string  { return s.Member }

// memberAt names a member with its peer URL when the step has one: a stale
// member may share its name with a healthy one, and the peer URL is what
// tells them apart.
func memberAt(s Step) string {
	if s.PeerURL == "" {
		return s.Member
	}
	return s.Member + " " + s.PeerURL
}
func voters(s Step) string {
	return fmt.Sprintf("(%d voting: quorum %d)", len(s.Voters), len(s.Voters)/2+1)
}

// Ops lists every operation, sorted, so the executor's table can be checked
// against it.
func Ops() []Op { return slices.Sorted(maps.Keys(operations)) }

// Known reports whether op is an operation of the plan vocabulary.
func (op Op) Known() bool { _, ok := operations[op]; return ok }

// Waits reports whether the op only reads and waits, changing nothing.
func (op Op) Waits() bool { return operations[op].wait }
