package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/kprov/kprov/internal/atomicfile"
	"github.com/kprov/kprov/inventory"
)

// stateFile is the lab's record of everything it made on the host, inside the lab directory.
const stateFile = "state.json"

// ErrNoLab is returned when a lab directory holds no state file.
var ErrNoLab = errors.New("no lab here")

// State is the lab's record of what it made on the host. Every name is
// written here before the thing it names is created, so that Down can
// undo a run that crashed half way.
type State struct {
	Name      string         `json:"name"`
	Dir       string         `json:"dir"`
	Subnet    netip.Prefix   `json:"subnet"`
	Gateway   netip.Addr     `json:"gateway"`
	Bridge    string         `json:"bridge"`
	Rootfs    string         `json:"rootfs"`
	Topology  string         `json:"topology"`
	Machines  []MachineState `json:"machines"`
	CreatedAt time.Time      `json:"created_at"`
}

// MachineState is one machine's host-side resources and fault settings.
type MachineState struct {
	Name     string           `json:"name"`
	Index    int              `json:"index"`
	Roles    []inventory.Role `json:"roles"`
	Address  netip.Addr       `json:"address"`
	Netns    string           `json:"netns"`
	HostVeth string           `json:"host_veth"`
	// Merged is the overlayfs mount point the machine boots from.
	Merged string `json:"merged"`
	// Cgroups are the machine's own cgroup directories, one per hierarchy,
	// made when it boots and removed when it stops.
	Cgroups []string `json:"cgroups,omitempty"`
	// PID is systemd-nspawn's process ID, 0 when the machine is not running.
	PID int `json:"pid,omitempty"`
	// Stopped records a deliberate `lab stop`, so status can tell it from a crash.
	Stopped bool   `json:"stopped,omitempty"`
	Cut     bool   `json:"cut,omitempty"`
	Paused  bool   `json:"paused,omitempty"`
	Netem   string `json:"netem,omitempty"`
	HostKey string `json:"host_key"`
}

// Machine returns the named machine's state.
func (s *State) Machine(name string) (*MachineState, error) {
	for i := range s.Machines {
		if s.Machines[i].Name == name {
			return &s.Machines[i], nil
		}
	}
	return nil, fmt.Errorf("lab %s has no machine %q", s.Name, name)
}

// LoadState reads the state file in dir; ErrNoLab when there is none.
func LoadState(dir string) (*State, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", dir, ErrNoLab)
	}
	if err != nil {
		return nil, fmt.Errorf("read lab state: %w", err)
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s: decode lab state: %w", filepath.Join(dir, stateFile), err)
	}
	return &s, nil
}

// save writes the state atomically, so a crash leaves the old or the new record, never half of one.
func (s *State) save() error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode lab state: %w", err)
	}
	return atomicfile.Write(filepath.Join(s.Dir, stateFile), append(data, '\n'), 0o600)
}
