package provision

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/provision/ssh"
	"github.com/kprov/kprov/roles"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// fakeHost is an ssh.Executor that accepts exactly the commands it was told
// to expect, in order, and fails the test on anything else: an unexpected
// command, an upload or download (gathering is read-only), a tunnel nobody
// asked for, or an expected command never run.
type fakeHost struct {
	t    *testing.T
	name string
	dial func(ctx context.Context, network, addr string) (net.Conn, error) // nil: no tunnel expected

	mu     sync.Mutex
	expect []fakeRun
}

// fakeRun is one expected command and what it answers.
type fakeRun struct {
	cmd, stdin string
	stdout     string
	err        error
}

var _ ssh.Executor = (*fakeHost)(nil)

func newFakeHost(t *testing.T, name string, runs ...fakeRun) *fakeHost {
	f := &fakeHost{t: t, name: name, expect: runs}
	t.Cleanup(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, r := range f.expect {
			t.Errorf("%s: expected command never ran: %q", name, r.cmd)
		}
	})
	return f
}

func (f *fakeHost) Run(_ context.Context, cmd ssh.Command) (ssh.Result, error) {
	var stdin []byte
	if cmd.Stdin != nil {
		stdin, _ = io.ReadAll(cmd.Stdin)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.expect) == 0 {
		f.t.Errorf("%s: unexpected command %q", f.name, cmd.Cmd)
		return ssh.Result{}, errors.New("unexpected command")
	}
	want := f.expect[0]
	if cmd.Cmd != want.cmd || string(stdin) != want.stdin {
		f.t.Errorf("%s: ran %q with stdin\n%s\nwant %q with stdin\n%s", f.name, cmd.Cmd, stdin, want.cmd, want.stdin)
		return ssh.Result{}, errors.New("unexpected command")
	}
	f.expect = f.expect[1:]
	return ssh.Result{Stdout: []byte(want.stdout)}, want.err
}

func (f *fakeHost) Upload(context.Context, ssh.FileSpec) (bool, error) {
	f.t.Errorf("%s: upload during read-only gathering", f.name)
	return false, errors.New("unexpected upload")
}

func (f *fakeHost) Download(context.Context, string, io.Writer) error {
	f.t.Errorf("%s: unexpected download", f.name)
	return errors.New("unexpected download")
}

func (f *fakeHost) Checksum(context.Context, string) (string, bool, error) {
	f.t.Errorf("%s: unexpected checksum (the probe script covers files)", f.name)
	return "", false, errors.New("unexpected checksum")
}

func (f *fakeHost) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if f.dial == nil {
		f.t.Errorf("%s: unexpected tunnel to %s", f.name, addr)
		return nil, errors.New("unexpected dial")
	}
	return f.dial(ctx, network, addr)
}

func (f *fakeHost) Close() error {
	f.t.Errorf("%s: Gather closed a connection it does not own", f.name)
	return nil
}

func (f *fakeHost) Name() string { return f.name }

// fakeConnector hands out fake hosts, or fails hosts with a given error; a
// host it knows nothing about fails the test.
type fakeConnector struct {
	t     *testing.T
	hosts map[string]*fakeHost
	errs  map[string]error
}

func (c *fakeConnector) Connect(_ context.Context, h *inventory.Host) (ssh.Executor, error) {
	if err, ok := c.errs[h.Name]; ok {
		return nil, &ssh.HostError{Host: h.Name, Err: err}
	}
	if f, ok := c.hosts[h.Name]; ok {
		return f, nil
	}
	c.t.Errorf("unexpected connection to %s", h.Name)
	return nil, errors.New("unexpected host")
}

// testInventory has three external etcd hosts, a master and a compute host.
func testInventory() *inventory.Inventory {
	hosts := []*inventory.Host{
		{Name: "etcd-1", Address: "10.0.0.11", Roles: []inventory.Role{inventory.RoleEtcd}},
		{Name: "etcd-2", Address: "10.0.0.12", Roles: []inventory.Role{inventory.RoleEtcd}},
		{Name: "etcd-3", Address: "10.0.0.13", Roles: []inventory.Role{inventory.RoleEtcd}},
		{Name: "cp-1", Address: "10.0.0.21", Roles: []inventory.Role{inventory.RoleMaster}},
		{Name: "node-1", Address: "10.0.0.31", Roles: []inventory.Role{inventory.RoleCompute}},
	}
	return &inventory.Inventory{
		Etcd:  inventory.Etcd{DataDir: "/var/lib/etcd"},
		Hosts: hosts,
		Topology: inventory.Topology{EtcdMode: inventory.EtcdExternal,
			EtcdHosts: []string{"etcd-1", "etcd-2", "etcd-3"}, EtcdMembers: []string{"etcd-1", "etcd-2", "etcd-3"},
			Masters: []string{"cp-1"}, Compute: []string{"node-1"}},
	}
}

// probeRun expects the probe script for files and answers with lines plus
// the end marker.
func probeRun(t *testing.T, host string, files []string, lines ...string) fakeRun {
	t.Helper()
	script, err := testProbe(host, files).script()
	if err != nil {
		t.Fatal(err)
	}
	return fakeRun{cmd: "sh -s", stdin: script, stdout: strings.Join(append(lines, "end=ok"), "\n") + "\n"}
}

// testProbe is the probe of a test inventory's host: every host but an
// etcd-N one is a Kubernetes node, whose probe lists containerd's images.
func testProbe(host string, files []string) hostProbe {
	p := defaultProbe(files)
	p.Images = !strings.HasPrefix(host, "etcd-")
	return p
}

func defaultProbe(files []string) hostProbe {
	return hostProbe{Files: files, EtcdConfig: plan.EtcdConfigPath, EtcdDataDir: "/var/lib/etcd",
		KubeletConf: plan.KubeletConfPath, APIServerManifest: plan.APIServerManifestPath, CNIBinDir: plan.CNIBinDir,
		ImagesTimeout: DefaultProbeTimeout / 3}
}

// freshHost is the probe output of an untouched Debian host.
func freshHost(name string) []string {
	return []string{"hostname=" + name, "arch=x86_64", "os_release.ID=debian", `os_release.VERSION_ID="13"`, "swap=off",
		"service.etcd=inactive", "service.kubelet=inactive", "service.containerd=inactive",
		"joined=no", "control_plane=no", "etcd_data=no",
		"cgroup_fs=cgroup2fs", "systemd_init=yes", "root_fs=ext2/ext3", "cap_bnd=000001ffffffffff", "containerd_path="}
}

func etcdConfig(name, addr, cluster, state string) string {
	// The shape templates/etcd.yaml.tmpl renders: quoted values, comments
	// (one with a colon), nested blocks.
	return fmt.Sprintf("# Rendered by kprov for etcd member %[1]s: do not edit\nname: %[1]q\ndata-dir: \"/var/lib/etcd\"\n"+
		"initial-advertise-peer-urls: \"https://%[2]s:2380\"\n# name: not-this-one\ninitial-cluster: %[3]q\n"+
		"initial-cluster-state: %[4]q\nclient-transport-security:\n  cert-file: /etc/kubernetes/pki/etcd/server.crt\n"+
		"listen-client-urls: \"https://%[2]s:2379\"\n", name, addr, cluster, state)
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestProbeScriptGolden(t *testing.T) {
	script, err := testProbe("cp-1", []string{"/etc/etcd/pki/ca.crt", "/etc/it's here.conf"}).script()
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "probe.sh.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(script), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./provision -run Golden -update to create it)", err)
	}
	if script != string(want) {
		t.Errorf("probe script differs from %s (run with -update if intended)\n--- got ---\n%s", golden, script)
	}
	if _, err := defaultProbe([]string{"relative/path"}).script(); err == nil {
		t.Error("a relative path was accepted")
	}
	if _, err := defaultProbe([]string{"/a\nb"}).script(); err == nil {
		t.Error("a path with a newline was accepted")
	}
}

// TestProbeScriptRunsLocally runs the real script under the local sh against
// files in a temporary directory and parses its output with the real
// parser, so the script and the parser cannot drift apart unnoticed.
func TestProbeScriptRunsLocally(t *testing.T) {
	for _, tool := range []string{"sh", "sha256sum", "base64", "uname", "sed", "grep"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	dir := t.TempDir()
	write := func(rel, content string) string {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	present := write("etc/it's here.conf", "hello\n")
	cfg := etcdConfig("etcd-1", "10.0.0.11", "etcd-1=https://10.0.0.11:2380", "new")
	p := hostProbe{
		Files:             []string{present, filepath.Join(dir, "missing.conf")},
		EtcdConfig:        write("etc/etcd/etcd.yaml", cfg),
		EtcdDataDir:       filepath.Dir(write("var/lib/etcd/member/snap/db", "x")),
		KubeletConf:       write("etc/kubernetes/kubelet.conf", "x"),
		APIServerManifest: filepath.Join(dir, "no-manifest.yaml"),
		CNIBinDir:         filepath.Join(dir, "opt/cni/bin"),
	}
	for name, mode := range map[string]os.FileMode{"bridge": 0o755, "loopback": 0o755, "README.md": 0o644} {
		write("opt/cni/bin/"+name, "x")
		if err := os.Chmod(filepath.Join(p.CNIBinDir, name), mode); err != nil {
			t.Fatal(err)
		}
	}
	p.EtcdDataDir = filepath.Dir(filepath.Dir(p.EtcdDataDir)) // DATA_DIR, not DATA_DIR/member/snap
	script, err := p.script()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-s")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("probe script: %v", err)
	}
	res, err := parseProbe(out)
	if err != nil {
		t.Fatalf("%v\noutput:\n%s", err, out)
	}
	f := res.Facts
	host, _ := exec.Command("uname", "-n").Output()
	if f.Hostname != strings.TrimSpace(string(host)) || f.Arch == "" {
		t.Errorf("hostname %q arch %q", f.Hostname, f.Arch)
	}
	wantFiles := map[string]string{present: sha256Hex([]byte("hello\n"))}
	if !reflect.DeepEqual(f.Files, wantFiles) {
		t.Errorf("files %v, want %v", f.Files, wantFiles)
	}
	if !f.Joined || f.ControlPlane || !res.EtcdData || string(res.EtcdConfig) != cfg {
		t.Errorf("joined %v control plane %v etcd data %v etcd config %q", f.Joined, f.ControlPlane, res.EtcdData, res.EtcdConfig)
	}
	// Only executables are plugins; the cgroup version and root file system
	// are this machine's, whatever they are, but read.
	if rt := f.Runtime; rt == nil || !reflect.DeepEqual(rt.CNIPlugins, []string{"bridge", "loopback"}) || rt.RootFS == "" {
		t.Errorf("runtime facts %+v", rt)
	}
}

func TestParseProbe(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	out := strings.Join([]string{
		"hostname=cp-1.example", "arch=aarch64", `os_release.ID="rocky"`, `os_release.VERSION_ID="9.6"`, "swap=on",
		"service.etcd=inactive", "service.kubelet=activating", "service.containerd=", // is-active printed nothing
		"version.etcd=etcd Version: 3.6.16", "version.kubeadm=v1.34.1", "version.kubelet=Kubernetes v1.34.1",
		"version.kubectl=Client Version: v1.34.1-rc.0", "version.broken=",
		"file=" + sum + " /etc/has space.conf", "file=absent /etc/missing.conf",
		"joined=yes", "control_plane=yes", "etcd_data=no",
		"version.containerd=containerd github.com/containerd/containerd/v2 v2.4.2 c3b3d8e4", "version.runc=runc version 1.1.5+ds1",
		"cgroup_fs=tmpfs", "systemd_init=yes", "root_fs=overlayfs", "cap_bnd=000001fffeffffff",
		"containerd_path=/usr/local/bin/containerd", "cni_plugin=portmap", "cni_plugin=bridge",
		"end=ok", "",
	}, "\n")
	res, err := parseProbe([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := &plan.HostFacts{Reachable: true, Hostname: "cp-1.example", OS: "rocky 9.6", Arch: "aarch64", SwapOn: true,
		Files:    map[string]string{"/etc/has space.conf": sum},
		Services: map[string]string{"etcd": "inactive", "kubelet": "activating", "containerd": "unknown"},
		Versions: map[string]string{"etcd": "3.6.16", "kubeadm": "1.34.1", "kubelet": "1.34.1", "kubectl": "1.34.1-rc.0", "broken": "",
			"containerd": "2.4.2", "runc": "1.1.5+ds1"},
		Joined: true, ControlPlane: true,
		// CapBnd 000001fffeffffff lacks bit 24, CAP_SYS_RESOURCE: the lab's machines.
		Runtime: &plan.RuntimeFacts{CgroupVersion: 1, SystemdInit: true, RootFS: "overlayfs", CapSysResource: false,
			ContainerdPath: "/usr/local/bin/containerd", CNIPlugins: []string{"bridge", "portmap"}}}
	if !reflect.DeepEqual(res.Facts, want) {
		t.Errorf("got  %+v\nwant %+v", res.Facts, want)
	}

	for name, bad := range map[string]string{
		"cut short":        "hostname=a\nswap=off\n",
		"unknown key":      "hostname=a\nsurprise=1\nend=ok\n",
		"not key=value":    "hostname=a\nbash: oops\nend=ok\n",
		"bad checksum":     "file=1234 /etc/x\nend=ok\n",
		"unreadable file":  "file=unreadable /etc/x\nend=ok\n",
		"after end marker": "end=ok\nhostname=a\n",
		"bad base64":       "etcd_config=!!\nend=ok\n",
		"bad capabilities": "cap_bnd=xyz\nend=ok\n",
	} {
		if _, err := parseProbe([]byte(bad)); err == nil {
			t.Errorf("%s: parsed without error", name)
		}
	}
}

func TestGatherHosts(t *testing.T) {
	inv := testInventory()
	sum := strings.Repeat("0f", 32)
	files := map[string][]string{"cp-1": {"/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/kubeadm.yaml"}}
	cp := append(freshHost("cp-1"), "swap=on", "service.kubelet=active", "version.kubeadm=v1.34.1",
		"file="+sum+" /etc/kubernetes/pki/ca.crt", "file=absent /etc/kubernetes/kubeadm.yaml", "joined=yes", "control_plane=yes")
	conn := &fakeConnector{t: t,
		hosts: map[string]*fakeHost{
			"etcd-1": newFakeHost(t, "etcd-1", probeRun(t, "etcd-1", nil, freshHost("etcd-1")...)),
			"etcd-2": newFakeHost(t, "etcd-2", probeRun(t, "etcd-2", nil, freshHost("etcd-2")...)),
			"cp-1":   newFakeHost(t, "cp-1", probeRun(t, "cp-1", files["cp-1"], cp...)),
			// Reached, but its probe output is cut off: not trusted as facts.
			"node-1": newFakeHost(t, "node-1", fakeRun{cmd: "sh -s", stdin: mustScript(t, "node-1", nil), stdout: "hostname=node-1\n"}),
		},
		errs: map[string]error{"etcd-3": fmt.Errorf("connect 10.0.0.13:22: %w", ssh.ErrTimeout)},
	}
	facts, err := Gather(t.Context(), inv, conn, GatherOptions{Files: files, EtcdTLS: &tls.Config{}})
	if err != nil {
		t.Fatal(err)
	}
	wantCP := &plan.HostFacts{Reachable: true, Hostname: "cp-1", OS: "debian 13", Arch: "x86_64", SwapOn: true,
		Files:    map[string]string{"/etc/kubernetes/pki/ca.crt": sum},
		Services: map[string]string{"etcd": "inactive", "kubelet": "active", "containerd": "inactive"},
		Versions: map[string]string{"kubeadm": "1.34.1"}, Joined: true, ControlPlane: true,
		Runtime: &plan.RuntimeFacts{CgroupVersion: 2, SystemdInit: true, RootFS: "ext2/ext3", CapSysResource: true}}
	if got := facts.Hosts["cp-1"]; !reflect.DeepEqual(got, wantCP) {
		t.Errorf("cp-1:\ngot  %+v\nwant %+v", got, wantCP)
	}
	if got := facts.Hosts["etcd-3"]; got.Reachable || got.Error != "connect 10.0.0.13:22: timed out" {
		t.Errorf("etcd-3: %+v, want unreachable with the transport's reason and no host prefix", got)
	}
	if got := facts.Hosts["node-1"]; got.Reachable || !strings.Contains(got.Error, "probe: output ends before its end marker") {
		t.Errorf("node-1: %+v", got)
	}
	if len(facts.Hosts) != 5 {
		t.Errorf("%d hosts in facts, want 5", len(facts.Hosts))
	}
	// No etcd service active and no data anywhere: a fresh cluster.
	if len(facts.Etcd) != 0 || facts.EtcdSource != "" {
		t.Errorf("etcd %+v from %q, want none", facts.Etcd, facts.EtcdSource)
	}
	wantData := map[string]bool{"etcd-1": false, "etcd-2": false}
	if !reflect.DeepEqual(facts.EtcdDataPresent, wantData) {
		t.Errorf("etcd data %v, want %v", facts.EtcdDataPresent, wantData)
	}
}

func mustScript(t *testing.T, host string, files []string) string {
	t.Helper()
	s, err := testProbe(host, files).script()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestGatherStopsOnHostKeyProblems(t *testing.T) {
	for _, kind := range []error{ssh.ErrHostKeyMismatch, ssh.ErrHostKeyRevoked} {
		t.Run(kind.Error(), func(t *testing.T) {
			inv := testInventory()
			hosts := map[string]*fakeHost{}
			for _, n := range []string{"etcd-1", "etcd-3", "cp-1", "node-1"} {
				hosts[n] = newFakeHost(t, n, probeRun(t, n, nil, freshHost(n)...))
			}
			keyErr := &ssh.HostKeyError{Kind: kind, Address: "10.0.0.12:22", OfferedType: "ssh-ed25519", OfferedFingerprint: "SHA256:new"}
			conn := &fakeConnector{t: t, hosts: hosts, errs: map[string]error{"etcd-2": keyErr}}
			facts, err := Gather(t.Context(), inv, conn, GatherOptions{Parallel: 2})
			if facts != nil || !errors.Is(err, kind) {
				t.Fatalf("facts %v, err %v; want no facts and %v", facts, err, kind)
			}
			var he *ssh.HostError
			if !errors.As(err, &he) || he.Host != "etcd-2" {
				t.Errorf("error %v does not name etcd-2", err)
			}
		})
	}
	t.Run("unknown key is recorded, not fatal", func(t *testing.T) {
		inv := testInventory()
		hosts := map[string]*fakeHost{}
		for _, n := range []string{"etcd-1", "etcd-2", "cp-1", "node-1"} {
			hosts[n] = newFakeHost(t, n, probeRun(t, n, nil, freshHost(n)...))
		}
		conn := &fakeConnector{t: t, hosts: hosts, errs: map[string]error{"etcd-3": &ssh.HostKeyError{Kind: ssh.ErrHostKeyUnknown, Address: "10.0.0.13:22"}}}
		facts, err := Gather(t.Context(), inv, conn, GatherOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if h := facts.Hosts["etcd-3"]; h.Reachable || !strings.Contains(h.Error, "host key unknown") {
			t.Errorf("etcd-3: %+v", h)
		}
	})
}

func TestGatherCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	conn := &fakeConnector{t: t} // no host may be contacted
	if _, err := Gather(ctx, testInventory(), conn, GatherOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
}

// TestGatherColdStart: every member stopped (etcd-3's host down), so no
// member can answer; the member list comes from the config files of the
// hosts holding etcd data, and etcd-3 from their initial-cluster.
func TestGatherColdStart(t *testing.T) {
	inv := testInventory()
	cluster := "etcd-1=https://10.0.0.11:2380,etcd-2=https://10.0.0.12:2380,etcd-3=https://10.0.0.13:2380"
	cfg1 := etcdConfig("etcd-1", "10.0.0.11", cluster, "existing")
	cfg2 := etcdConfig("etcd-2", "10.0.0.12", cluster, "existing")
	withData := func(name, cfg string) []string {
		return append(freshHost(name), "etcd_data=yes", "service.etcd=failed", "version.etcd=etcd Version: 3.6.16", "etcd_config="+b64(cfg))
	}
	conn := &fakeConnector{t: t,
		hosts: map[string]*fakeHost{
			"etcd-1": newFakeHost(t, "etcd-1", probeRun(t, "etcd-1", nil, withData("etcd-1", cfg1)...)),
			"etcd-2": newFakeHost(t, "etcd-2", probeRun(t, "etcd-2", nil, withData("etcd-2", cfg2)...)),
			"cp-1":   newFakeHost(t, "cp-1", probeRun(t, "cp-1", nil, freshHost("cp-1")...)),
			"node-1": newFakeHost(t, "node-1", probeRun(t, "node-1", nil, freshHost("node-1")...)),
		},
		errs: map[string]error{"etcd-3": errors.New("connect 10.0.0.13:22: connection refused")},
	}
	facts, err := Gather(t.Context(), inv, conn, GatherOptions{EtcdTLS: &tls.Config{}})
	if err != nil {
		t.Fatal(err)
	}
	core := sha256Hex(plan.NormalizeEtcdConfig([]byte(cfg1)))
	want := []plan.EtcdMember{
		{Name: "etcd-1", PeerURL: "https://10.0.0.11:2380", Host: "etcd-1", HostReachable: true, ConfigSHA256: sha256Hex([]byte(cfg1)), ConfigCoreSHA256: core},
		{Name: "etcd-2", PeerURL: "https://10.0.0.12:2380", Host: "etcd-2", HostReachable: true, ConfigSHA256: sha256Hex([]byte(cfg2)),
			ConfigCoreSHA256: sha256Hex(plan.NormalizeEtcdConfig([]byte(cfg2)))},
		{Name: "etcd-3", PeerURL: "https://10.0.0.13:2380", Host: "etcd-3"},
	}
	if !reflect.DeepEqual(facts.Etcd, want) || facts.EtcdSource != plan.EtcdSourceConfig {
		t.Errorf("etcd from %q:\ngot  %+v\nwant %+v", facts.EtcdSource, facts.Etcd, want)
	}
	if !reflect.DeepEqual(facts.EtcdDataPresent, map[string]bool{"etcd-1": true, "etcd-2": true}) {
		t.Errorf("etcd data %v", facts.EtcdDataPresent)
	}
}

// TestGatherTiesMembersToHostsByPeerURL: a member's host is the one whose
// address is in its peer URL, whatever name the member gives itself and
// whichever disk its config was read from (RELIABILITY 19). Here etcd-2's
// data directory belongs to a member that calls itself "etcd-3", and the
// configs list a stale "etcd-3" at an address no inventory host has. Given
// these facts, the planner must refuse.
func TestGatherTiesMembersToHostsByPeerURL(t *testing.T) {
	inv := testInventory()
	cfg1 := etcdConfig("etcd-1", "10.0.0.11", "etcd-1=https://10.0.0.11:2380,etcd-2=https://10.0.0.12:2380,etcd-3=https://10.0.0.99:2380", "existing")
	cfg2 := etcdConfig("etcd-3", "10.0.0.12", "etcd-1=https://10.0.0.11:2380,etcd-3=https://10.0.0.12:2380", "existing")
	cfg3 := etcdConfig("etcd-3", "10.0.0.13", "etcd-3=https://10.0.0.13:2380", "new")
	withData := func(name, cfg string) []string {
		return append(freshHost(name), "etcd_data=yes", "service.etcd=failed", "etcd_config="+b64(cfg))
	}
	conn := &fakeConnector{t: t,
		hosts: map[string]*fakeHost{
			"etcd-1": newFakeHost(t, "etcd-1", probeRun(t, "etcd-1", nil, withData("etcd-1", cfg1)...)),
			"etcd-2": newFakeHost(t, "etcd-2", probeRun(t, "etcd-2", nil, withData("etcd-2", cfg2)...)),
			// etcd-3 holds a config but no data: not a member by itself.
			"etcd-3": newFakeHost(t, "etcd-3", probeRun(t, "etcd-3", nil, append(freshHost("etcd-3"), "etcd_config="+b64(cfg3))...)),
			"cp-1":   newFakeHost(t, "cp-1", probeRun(t, "cp-1", nil, freshHost("cp-1")...)),
			"node-1": newFakeHost(t, "node-1", probeRun(t, "node-1", nil, freshHost("node-1")...)),
		},
	}
	facts, err := Gather(t.Context(), inv, conn, GatherOptions{EtcdTLS: &tls.Config{}})
	if err != nil {
		t.Fatal(err)
	}
	hashes := func(cfg string) (string, string) {
		return sha256Hex([]byte(cfg)), sha256Hex(plan.NormalizeEtcdConfig([]byte(cfg)))
	}
	sum1, core1 := hashes(cfg1)
	sum2, core2 := hashes(cfg2)
	want := []plan.EtcdMember{
		{Name: "etcd-1", PeerURL: "https://10.0.0.11:2380", Host: "etcd-1", HostReachable: true, ConfigSHA256: sum1, ConfigCoreSHA256: core1},
		// Named etcd-3, but its peer URL is etcd-2's address.
		{Name: "etcd-3", PeerURL: "https://10.0.0.12:2380", Host: "etcd-2", HostReachable: true, ConfigSHA256: sum2, ConfigCoreSHA256: core2},
		// Named etcd-3, at an address no inventory host has: tied to no host.
		{Name: "etcd-3", PeerURL: "https://10.0.0.99:2380"},
	}
	if !reflect.DeepEqual(facts.Etcd, want) || facts.EtcdSource != plan.EtcdSourceConfig {
		t.Fatalf("etcd from %q:\ngot  %+v\nwant %+v", facts.EtcdSource, facts.Etcd, want)
	}

	// Given these facts, the planner refuses rather than start, stop or
	// wipe etcd on the host named etcd-3 for a member that is not there.
	var targets []roles.EtcdTarget
	for _, n := range inv.Topology.EtcdMembers {
		targets = append(targets, roles.EtcdTarget{Name: n, PeerURL: plan.EtcdPeerURL(inv.Host(n).Address)})
	}
	stages, _, err := roles.PlanEtcd(roles.EtcdInput{Live: facts.Etcd, Want: targets, DataDir: inv.Etcd.DataDir, Service: plan.EtcdUnit,
		Config: func(roles.EtcdTarget, []roles.EtcdTarget, string) roles.File {
			return roles.File{Path: plan.EtcdConfigPath}
		}})
	var re *roles.RefusalError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "inventory host etcd-2") || !strings.Contains(err.Error(), "inventory host etcd-3") {
		var steps []string
		for _, st := range stages {
			for _, s := range st.Steps {
				steps = append(steps, s.Host+": "+s.String())
			}
		}
		t.Fatalf("want a refusal naming hosts etcd-2 and etcd-3, got %v; steps %v", err, steps)
	}
}

func TestPoolConnectorMapsSSHConfig(t *testing.T) {
	// A bastion that cannot be parsed fails before any network use.
	inv := testInventory()
	h := inv.Hosts[0]
	h.SSH.Bastions = []string{"b:0"}
	pool := ssh.NewPool(ssh.Options{})
	defer pool.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	ex, err := (&PoolConnector{Pool: pool, Inventory: inv}).Connect(ctx, h)
	if ex != nil || err == nil || !strings.Contains(err.Error(), `bastion "b:0": bad port`) {
		t.Fatalf("executor %v, err %v", ex, err)
	}
}

// TestParseProbeImages: containerd's images by reference and digest, or
// why they are unknown; a malformed image line is an error, not a skip.
func TestParseProbeImages(t *testing.T) {
	d1, d2 := "sha256:"+strings.Repeat("1", 64), "sha256:"+strings.Repeat("2", 64)
	res, err := parseProbe([]byte("images=listed\nimage=registry.k8s.io/pause:3.10.2 " + d1 + "\nimage=registry.k8s.io/etcd:3.6.16-0 " + d2 + "\nend=ok\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"registry.k8s.io/pause:3.10.2": d1, "registry.k8s.io/etcd:3.6.16-0": d2}
	if !reflect.DeepEqual(res.Facts.Images, want) || res.Facts.ImagesUnknown != "" {
		t.Errorf("images %v (unknown %q), want %v", res.Facts.Images, res.Facts.ImagesUnknown, want)
	}
	for _, reason := range []string{"ctr not found", "containerd is not running", "ctr images ls failed"} {
		res, err := parseProbe([]byte("images=unknown: " + reason + "\nend=ok\n"))
		if err != nil || res.Facts.ImagesUnknown != reason || res.Facts.Images != nil {
			t.Errorf("%s: got %+v, %v", reason, res.Facts, err)
		}
	}
	for _, bad := range []string{"image=registry.k8s.io/pause:3.10.2\n", "image=registry.k8s.io/pause:3.10.2 sha256:short\n", "images=maybe\n"} {
		if _, err := parseProbe([]byte(bad + "end=ok\n")); err == nil {
			t.Errorf("%q parsed without error", bad)
		}
	}
}

// TestProbeImagesRunsLocally runs the images part of the probe under the
// local sh: without ctr, and with a ctr but no containerd socket, it says
// why and the probe still ends.
func TestProbeImagesRunsLocally(t *testing.T) {
	if _, err := exec.LookPath("ctr"); err == nil {
		t.Skip("this machine has a ctr")
	}
	if _, err := os.Stat(containerdSocket); err == nil {
		t.Skip("this machine runs containerd")
	}
	bin := t.TempDir()
	fakeCtr := filepath.Join(bin, "ctr")
	for _, c := range []struct {
		withCtr bool
		want    string
	}{{false, "ctr not found"}, {true, "containerd is not running"}} {
		if c.withCtr {
			if err := os.WriteFile(fakeCtr, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command("sh", "-s")
		cmd.Env = append(os.Environ(), "PATH="+bin+":/usr/bin:/bin")
		cmd.Stdin = strings.NewReader(probeImages(20*time.Second) + "echo end=ok\n")
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		res, err := parseProbe(out)
		if err != nil || res.Facts.ImagesUnknown != c.want {
			t.Errorf("ctr %v: got %q, %v; want %q", c.withCtr, out, err, c.want)
		}
	}
}
