// Package plan is kprov's plan vocabulary: the plan as plain data (stages of
// typed steps), the facts it is made from, and the host layout (paths, ports,
// units) that the planner renders into and fact gathering reads. It imports
// nothing of kprov's but the inventory, so the planner (roles) and the code
// that carries a plan out (provision) share it without the planner linking
// any transport.
package plan

import (
	"encoding/json"
	"fmt"
	"io/fs"
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
	// Content is what an upload writes, or the join secret a
	// create-bootstrap-token or upload-certs step gives the cluster; it never
	// goes into a printed or saved plan.
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
	// Starting are, for a health wait, the voters its stage just started
	// or changed: they get the whole wait. Any other voter was not
	// touched, and one that stays unhealthy stops the wait after a minute.
	Starting []string `json:"starting,omitempty"`
	// InitialCluster and ClusterToken are what an etcd-restore step gives
	// etcdutl snapshot restore: the new member list (name=peerURL,...) and
	// the new cluster's token.
	InitialCluster string `json:"initial_cluster,omitempty"`
	ClusterToken   string `json:"cluster_token,omitempty"`

	// Container images: what an import-images step's archive (Source) holds.
	Images []ImageRef `json:"images,omitempty"`

	// Kubernetes nodes.
	Labels map[string]string `json:"labels,omitempty"`
	Taints []string          `json:"taints,omitempty"`
	// Node is the Kubernetes node a drain-node or delete-node step acts on
	// through the API; it need not be an inventory host (the step's Host
	// is the master whose kubectl does it).
	Node string `json:"node,omitempty"`
}

// String renders a step on one line for the plan display, as its
// operation's entry in the table of operations says.
func (s Step) String() string {
	if op, ok := operations[s.Op]; ok && op.describe != nil {
		return string(s.Op) + " " + op.describe(s)
	}
	return string(s.Op)
}

// StageKind is what a stage does; with its target it identifies the stage.
type StageKind string

// The kinds of stage the planner makes, in the order a plan runs them.
const (
	StagePrepare           StageKind = "prepare"                    // files, binaries and units on every host, in parallel
	StageEtcdBootstrap     StageKind = "etcd/bootstrap"             // the first member starts alone as a new cluster
	StageEtcdStartStopped  StageKind = "etcd/start-stopped"         // members that are down start (together on a cold start)
	StageEtcdAdd           StageKind = "etcd/add"                   // one member added as a learner and promoted
	StageEtcdRemove        StageKind = "etcd/remove"                // one member removed, then stopped and wiped
	StageEtcdRestart       StageKind = "etcd/restart"               // one member restarted for a changed configuration or a new etcd binary
	StageEtcdFinalize      StageKind = "etcd/finalize-config"       // every member's config records the full member list
	StageEtcdRestore       StageKind = "etcd/restore"               // kprov restore: every member's data directory restored from one snapshot
	StageEtcdStartRestore  StageKind = "etcd/start-restored"        // kprov restore: the restored members start together
	StageImages            StageKind = "images"                     // image archives imported on the nodes that lack their images, in parallel
	StageControlPlaneInit  StageKind = "control-plane/init"         // kubeadm init on the first master
	StageJoinSecrets       StageKind = "control-plane/join-secrets" // the join secrets renewed on a master before anything joins
	StageControlPlaneJoin  StageKind = "control-plane/join"         // one further master joins
	StageKubeconfig        StageKind = "control-plane/kubeconfig"
	StageNodesJoin         StageKind = "nodes/join"          // workers join, in parallel
	StageNodesLabels       StageKind = "nodes/labels"        // labels and taints through the API
	StageNodesReady        StageKind = "nodes/ready"         // every node reports Ready
	StageNodesRemove       StageKind = "nodes/remove"        // one node no longer in the inventory drained, then its Node deleted
	StageCertsControlPlane StageKind = "certs/control-plane" // kprov certs renew: one master's kubeadm certificates renewed, its control plane restarted
	StageResetDrain        StageKind = "reset/drain"         // kprov reset --host: the nodes drained through a master that stays
	StageReset             StageKind = "reset"               // kprov reset: hosts taken back to clean (kubeadm reset, units stopped, kprov's files removed)
	StageResetDeleteNodes  StageKind = "reset/delete-nodes"  // kprov reset --host: the reset nodes' Node objects deleted
)

// Stage is a group of steps with a concurrency bound: 1 where quorum demands
// that changes happen one at a time, more where hosts are independent. The
// planner sets its kind, target and title; nothing parses them back.
type Stage struct {
	Kind StageKind `json:"kind"`
	// Target is the member or master a one-host stage is about; empty for
	// stages over many hosts.
	Target string `json:"target,omitempty"`
	// Title says what the stage does for a person, e.g. "adding etcd member
	// 2/3 (etcd-2)".
	Title    string `json:"title"`
	Parallel int    `json:"parallel"`
	// Quorum describes the etcd quorum during a serial stage, e.g. "3 voting, quorum 2".
	Quorum string `json:"quorum,omitempty"`
	Steps  []Step `json:"steps"`
}

// Name identifies the stage in reports and logs: its kind, then its target,
// e.g. "etcd/add/etcd-2".
func (s *Stage) Name() string {
	if s.Target == "" {
		return string(s.Kind)
	}
	return string(s.Kind) + "/" + s.Target
}

// Hosts lists the hosts the stage's steps run on, in first-step order.
func (s *Stage) Hosts() []string {
	var out []string
	seen := map[string]bool{}
	for _, st := range s.Steps {
		if !seen[st.Host] {
			seen[st.Host] = true
			out = append(out, st.Host)
		}
	}
	return out
}

// stageJSON is how a stage is written: its fields plus its name, for people
// and scripts that read saved plans.
type stageJSON struct {
	Name string `json:"name"`
	stageFields
}

type stageFields Stage

// MarshalJSON writes the stage with its name.
func (s Stage) MarshalJSON() ([]byte, error) {
	return json.Marshal(stageJSON{Name: s.Name(), stageFields: stageFields(s)})
}

// UnmarshalJSON reads a stage written by MarshalJSON; the name is derived, so
// it is not read back.
func (s *Stage) UnmarshalJSON(b []byte) error {
	var v stageJSON
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*s = Stage(v.stageFields)
	return nil
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
	HostsToReset       int `json:"hosts_to_reset,omitempty"`
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

// Has reports whether the plan has a stage of this kind with steps.
func (p *Plan) Has(kind StageKind) bool {
	for _, st := range p.Stages {
		if st.Kind == kind && len(st.Steps) > 0 {
			return true
		}
	}
	return false
}

// String renders the summary line, e.g.
// "Plan: 12 hosts to prepare, 3 etcd members to add, 2 masters to join, 0 to remove".
func (s Summary) String() string {
	if s.HostsToReset > 0 {
		return fmt.Sprintf("Plan: %d hosts to reset, %d etcd members to remove", s.HostsToReset, s.EtcdMembersRemoved)
	}
	return fmt.Sprintf("Plan: %d hosts to prepare, %d etcd members to add, %d masters to join, %d nodes to join, %d etcd restarts, %d to remove",
		s.HostsToPrepare, s.EtcdMembersToAdd, s.MastersToJoin, s.NodesToJoin, s.EtcdRestarts, s.EtcdMembersRemoved)
}

// Count fills in the summary from the stages and steps.
func (p *Plan) Count() {
	s := Summary{}
	prepared, reset := map[string]bool{}, map[string]bool{}
	for _, st := range p.Stages {
		for _, step := range st.Steps {
			switch step.Op {
			case OpEtcdAddLearner:
				s.EtcdMembersToAdd++
			case OpEtcdRemove:
				s.EtcdMembersRemoved++
			case OpRestartService:
				if step.Service == EtcdUnit {
					s.EtcdRestarts++
				}
			case OpKubeadmJoin:
				if st.Kind == StageControlPlaneJoin {
					s.MastersToJoin++
				} else {
					s.NodesToJoin++
				}
			case OpUploadFile:
				s.FilesToWrite++
			}
			if st.Kind == StagePrepare {
				prepared[step.Host] = true
			}
			if st.Kind == StageReset {
				reset[step.Host] = true
			}
		}
	}
	if p.Has(StageEtcdBootstrap) {
		s.EtcdMembersToAdd++ // the first member of a new cluster is added by starting it
	}
	s.HostsToPrepare = len(prepared)
	s.HostsToReset = len(reset)
	p.Summary = s
}
