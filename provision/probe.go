package provision

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kprov/kprov/provision/plan"
)

// hostProbe says what the probe script looks at. Paths are parameters, not
// constants in the script, so a test can run the real script under a local
// sh against files in a temporary directory.
type hostProbe struct {
	Files             []string // checksummed; a missing file is reported absent
	EtcdConfig        string   // content sent back (etcd configs hold paths, not keys)
	EtcdDataDir       string
	KubeletConf       string
	APIServerManifest string
	// Images lists containerd's images in the k8s.io namespace (on
	// Kubernetes nodes); the probe reports why when it cannot.
	Images bool
	// ImagesTimeout bounds listing the images (see probeImages).
	ImagesTimeout time.Duration
	CNIBinDir     string // the executables in it are the CNI plugins the host has
}

// probeResult is what one host's probe found: its facts, plus what only
// gathering needs (the etcd config's content, whether etcd has data).
type probeResult struct {
	Facts      *plan.HostFacts
	EtcdData   bool
	EtcdConfig []byte // nil when the file is absent
}

// capSysResource is CAP_SYS_RESOURCE's bit in /proc/PID/status's capability sets.
const capSysResource = 24

// versionPattern finds the version in the first line a binary prints, e.g.
// "etcd Version: 3.6.16", "Kubernetes v1.34.1", "Client Version: v1.34.1".
var versionPattern = regexp.MustCompile(`v?(\d+\.\d+\.\d+[0-9A-Za-z.+-]*)`)

// parseProbe reads the probe's output. Any line it does not expect is an
// error: the script and this parser change together, and a silent skip would
// turn a drift between them into a host that looks fresh.
func parseProbe(out []byte) (*probeResult, error) {
	r := &probeResult{Facts: &plan.HostFacts{Reachable: true, Files: map[string]string{}, Services: map[string]string{}, Versions: map[string]string{},
		Runtime: &plan.RuntimeFacts{CapSysResource: true}}}
	f := r.Facts
	rt := f.Runtime
	var osID, osVersion string
	complete := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, len(out)+1)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if complete {
			return nil, fmt.Errorf("output line %d: %q after the end marker", n, line)
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("output line %d: %q is not key=value", n, line)
		}
		switch {
		case line == "end=ok":
			complete = true
		case key == "hostname":
			f.Hostname = val
		case key == "arch":
			f.Arch = val
		case key == "os_release.ID":
			osID = unquoteOSRelease(val)
		case key == "os_release.VERSION_ID":
			osVersion = unquoteOSRelease(val)
		case key == "swap":
			f.SwapOn = val == "on"
		case strings.HasPrefix(key, "service."):
			if val == "" {
				val = "unknown"
			}
			f.Services[strings.TrimPrefix(key, "service.")] = val
		case strings.HasPrefix(key, "version."):
			// A binary that is installed but prints no version (broken, or
			// the wrong architecture) is recorded as present with no version.
			v := ""
			if m := versionPattern.FindStringSubmatch(val); m != nil {
				v = m[1]
			}
			f.Versions[strings.TrimPrefix(key, "version.")] = v
		case key == "file":
			sum, path, ok := strings.Cut(val, " ")
			if !ok {
				return nil, fmt.Errorf("output line %d: file %q has no path", n, val)
			}
			switch {
			case sum == "absent":
			case sum == "unreadable":
				return nil, fmt.Errorf("%s exists but cannot be read", path)
			case len(sum) == sha256.Size*2:
				f.Files[path] = sum
			default:
				return nil, fmt.Errorf("output line %d: checksum %q of %s", n, sum, path)
			}
		case key == "joined":
			f.Joined = val == "yes"
		case key == "control_plane":
			f.ControlPlane = val == "yes"
		case key == "cgroup_fs":
			switch val {
			case "cgroup2fs":
				rt.CgroupVersion = 2
			case "tmpfs":
				rt.CgroupVersion = 1
			}
		case key == "systemd_init":
			rt.SystemdInit = val == "yes"
		case key == "root_fs":
			rt.RootFS = val
		case key == "cap_bnd":
			if val == "" {
				break // unreadable: assume a standard host's
			}
			caps, err := strconv.ParseUint(val, 16, 64)
			if err != nil {
				return nil, fmt.Errorf("output line %d: capability set %q: %w", n, val, err)
			}
			rt.CapSysResource = caps&(1<<capSysResource) != 0
		case key == "containerd_path":
			rt.ContainerdPath = val
		case key == "cni_plugin":
			rt.CNIPlugins = append(rt.CNIPlugins, val)
		case key == "etcd_data":
			r.EtcdData = val == "yes"
		case key == "images":
			if reason, ok := strings.CutPrefix(val, "unknown: "); ok {
				f.ImagesUnknown = reason
			} else if val != "listed" {
				return nil, fmt.Errorf("output line %d: images %q", n, val)
			}
		case key == "image":
			ref, digest, err := parseImageLine(val)
			if err != nil {
				return nil, fmt.Errorf("output line %d: %w", n, err)
			}
			if f.Images == nil {
				f.Images = map[string]string{}
			}
			f.Images[ref] = digest
		case key == "etcd_config":
			b, err := base64.StdEncoding.DecodeString(val)
			if err != nil {
				return nil, fmt.Errorf("output line %d: etcd config: %w", n, err)
			}
			r.EtcdConfig = b
		default:
			return nil, fmt.Errorf("output line %d: unexpected key %q", n, key)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("output: %w", err)
	}
	if !complete {
		return nil, errors.New("output ends before its end marker (cut short?)")
	}
	f.OS = strings.TrimSpace(osID + " " + osVersion)
	slices.Sort(rt.CNIPlugins)
	return r, nil
}

// parseImageLine reads "REF DIGEST", one image of containerd's list.
func parseImageLine(val string) (ref, digest string, err error) {
	ref, digest, ok := strings.Cut(val, " ")
	if !ok || ref == "" || !digestPattern.MatchString(digest) {
		return "", "", fmt.Errorf("image %q: want REFERENCE sha256:DIGEST", val)
	}
	return ref, digest, nil
}

// unquoteOSRelease undoes os-release's shell-style quoting of simple values.
func unquoteOSRelease(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		return v[1 : len(v)-1]
	}
	return v
}

// sha256Hex is the hex SHA-256 of b, the form HostFacts.Files uses.
func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
