// Package provision holds the plan (what kprov will do, as plain data), the
// facts it is made from, and later the code that carries it out on hosts.
package plan

import (
	"fmt"
	"io/fs"
)

// Op is the kind of operation a step performs.
type Op string

// The operations a plan can contain. Each is idempotent when applied: it
// checks the live state first and does nothing when its effect is already there.
const (
	OpUploadFile      Op = "upload-file"       // write a file atomically (temp name, fsync, rename)
	OpRunCommand      Op = "run-command"       // run a command on the host
	OpStartService    Op = "start-service"     // enable and start a systemd unit
	OpRestartService  Op = "restart-service"   // restart a systemd unit
	OpStopService     Op = "stop-service"      // stop and disable a systemd unit
	OpWipeDataDir     Op = "wipe-data-dir"     // remove an etcd data directory
	OpEtcdAddLearner  Op = "etcd-add-learner"  // MemberAddAsLearner with the member's peer URL
	OpEtcdPromote     Op = "etcd-promote"      // MemberPromote once the learner has caught up
	OpEtcdRemove      Op = "etcd-remove"       // MemberRemove by the member's ID
	OpEtcdMoveLeader  Op = "etcd-move-leader"  // move leadership away from a member, if it leads
	OpWaitEtcdHealthy Op = "wait-etcd-healthy" // every voting member answers and the cluster has one leader
	OpWaitCaughtUp    Op = "wait-etcd-caught-up"
	OpKubeadmInit     Op = "kubeadm-init"
	OpKubeadmJoin     Op = "kubeadm-join"
	OpWaitAPIServer   Op = "wait-apiserver-healthy"
	OpLabelNode       Op = "label-taint-node"
	OpFetchKubeconfig Op = "fetch-kubeconfig"
)

// Step is one typed operation on one host, with the reason it is needed.
type Step struct {
	Op     Op     `json:"op"`
	Host   string `json:"host"`
	Reason string `json:"reason"`

	// Files.
	Path   string      `json:"path,omitempty"`
	Mode   fs.FileMode `json:"mode,omitempty"`
	SHA256 string      `json:"sha256,omitempty"`
	Secret bool        `json:"secret,omitempty"`
	// Content is what an upload writes; it never goes into a printed or saved plan.
	Content []byte `json:"-"`
	// Source is a file on the operator's machine an upload streams instead of
	// Content (a binary from the inventory's artifacts block); apply checks
	// its SHA-256 against SHA256 before sending a byte.
	Source string `json:"source,omitempty"`

	// Commands and services.
	Command string `json:"command,omitempty"`
	Service string `json:"service,omitempty"`

	// etcd membership.
	Member   string   `json:"member,omitempty"`    // member name
	MemberID uint64   `json:"member_id,omitempty"` // for remove, promote (0 when assigned at apply time)
	PeerURL  string   `json:"peer_url,omitempty"`
	Voters   []string `json:"voters,omitempty"` // for waits: the voting members expected healthy

	// Kubernetes nodes.
	Labels map[string]string `json:"labels,omitempty"`
	Taints []string          `json:"taints,omitempty"`
}

// String renders a step on one line for the plan display.
func (s Step) String() string {
	switch s.Op {
	case OpUploadFile:
		return fmt.Sprintf("%s %s (%04o)", s.Op, s.Path, uint32(s.Mode))
	case OpRunCommand:
		return fmt.Sprintf("%s %q", s.Op, s.Command)
	case OpStartService, OpRestartService, OpStopService:
		return fmt.Sprintf("%s %s", s.Op, s.Service)
	case OpWipeDataDir:
		return fmt.Sprintf("%s %s", s.Op, s.Path)
	case OpEtcdAddLearner:
		return fmt.Sprintf("%s %s %s", s.Op, s.Member, s.PeerURL)
	case OpEtcdPromote, OpEtcdRemove, OpEtcdMoveLeader, OpWaitCaughtUp:
		return fmt.Sprintf("%s %s", s.Op, s.Member)
	case OpWaitEtcdHealthy:
		return fmt.Sprintf("%s (%d voting: quorum %d)", s.Op, len(s.Voters), len(s.Voters)/2+1)
	default:
		return string(s.Op)
	}
}

// Stage is a group of steps with a concurrency bound: 1 where quorum demands
// that changes happen one at a time, more where hosts are independent.
type Stage struct {
	Name     string `json:"name"` // hierarchical, e.g. etcd/add/etcd-2
	Parallel int    `json:"parallel"`
	// Quorum describes the etcd quorum during a serial stage, e.g. "3 voting, quorum 2".
	Quorum string `json:"quorum,omitempty"`
	Steps  []Step `json:"steps"`
}

// Plan is everything kprov will do, in order. It is plain data: printing it
// is the dry run, and applying it is the only thing that changes hosts.
type Plan struct {
	Cluster string   `json:"cluster"`
	Stages  []Stage  `json:"stages"`
	Summary Summary  `json:"summary"`
	Notes   []string `json:"notes,omitempty"` // warnings a person should read before applying
	// FactsDigest identifies the facts the plan was made from; apply refuses a
	// saved plan when the live facts no longer match.
	FactsDigest string `json:"facts_digest"`
}

// Summary counts what the plan changes.
type Summary struct {
	HostsToPrepare     int `json:"hosts_to_prepare"`
	EtcdMembersToAdd   int `json:"etcd_members_to_add"`
	EtcdMembersRemoved int `json:"etcd_members_to_remove"`
	EtcdRestarts       int `json:"etcd_restarts"`
	MastersToJoin      int `json:"masters_to_join"`
	NodesToJoin        int `json:"nodes_to_join"`
	FilesToWrite       int `json:"files_to_write"`
}

// Empty reports whether the plan changes nothing.
func (p *Plan) Empty() bool {
	for _, st := range p.Stages {
		if len(st.Steps) > 0 {
			return false
		}
	}
	return true
}

// String renders the summary line, e.g.
// "Plan: 12 hosts to prepare, 3 etcd members to add, 2 masters to join, 0 to remove".
func (s Summary) String() string {
	return fmt.Sprintf("Plan: %d hosts to prepare, %d etcd members to add, %d masters to join, %d nodes to join, %d etcd restarts, %d to remove",
		s.HostsToPrepare, s.EtcdMembersToAdd, s.MastersToJoin, s.NodesToJoin, s.EtcdRestarts, s.EtcdMembersRemoved)
}
