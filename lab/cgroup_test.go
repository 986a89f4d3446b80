package lab

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// hybridMountinfo is this project's CI host: every controller on cgroup v1,
// systemd's named hierarchy, and an empty v2 hierarchy beside them.
const hybridMountinfo = `30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:29 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
33 30 0:30 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
35 30 0:32 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
41 22 0:38 / /work rw,relatime - ext4 /dev/vda rw
`

func TestMachineCgroups(t *testing.T) {
	for _, tc := range []struct {
		name, procCgroup, mountinfo string
		want                        []string
	}{
		{
			name: "hybrid host, caller in a memory cgroup of its own",
			procCgroup: `9:name=systemd:/
5:devices:/
4:memory:/process_api/5254
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
`,
			mountinfo: hybridMountinfo,
			want: []string{
				"/sys/fs/cgroup/systemd/kprov-lab.demo.master-1",
				"/sys/fs/cgroup/devices/kprov-lab.demo.master-1",
				"/sys/fs/cgroup/memory/process_api/5254/kprov-lab.demo.master-1",
				"/sys/fs/cgroup/cpuset/kprov-lab.demo.master-1",
				"/sys/fs/cgroup/cpuacct/kprov-lab.demo.master-1",
				"/sys/fs/cgroup/cpu/kprov-lab.demo.master-1",
				"/sys/fs/cgroup/unified/kprov-lab.demo.master-1",
			},
		},
		{
			name: "co-mounted controllers, a hierarchy nobody mounted is skipped",
			procCgroup: `12:pids:/user.slice
4:cpu,cpuacct:/user.slice/session-3.scope
1:name=systemd:/user.slice/session-3.scope
`,
			mountinfo: `25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,xattr,cpu,cpuacct
26 24 0:23 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
`,
			want: []string{
				"/sys/fs/cgroup/cpu,cpuacct/user.slice/session-3.scope/kprov-lab.demo.master-1",
				"/sys/fs/cgroup/systemd/user.slice/session-3.scope/kprov-lab.demo.master-1",
			},
		},
		{
			name:       "cgroup v2 only, with a space in the mount point",
			procCgroup: "0::/ci/job 7\n",
			mountinfo:  `29 23 0:26 / /sys/fs/cgroup\040v2 rw,nosuid - cgroup2 cgroup2 rw,nsdelegate` + "\n",
			want:       []string{"/sys/fs/cgroup v2/ci/job 7/kprov-lab.demo.master-1"},
		},
		{
			name:       "a mount of a subtree shows the caller's cgroup below its root",
			procCgroup: "4:memory:/outer/inner\n",
			mountinfo:  "34 30 0:31 /outer /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
			want:       []string{"/sys/fs/cgroup/memory/inner/kprov-lab.demo.master-1"},
		},
		{
			name:       "a mount of another subtree cannot hold it",
			procCgroup: "4:memory:/elsewhere\n0::/\n",
			mountinfo:  "34 30 0:31 /outer /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n40 30 0:37 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
			want:       []string{"/sys/fs/cgroup/unified/kprov-lab.demo.master-1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := machineCgroups([]byte(tc.procCgroup), []byte(tc.mountinfo), cgroupName("demo", "master-1"))
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("machineCgroups = %q, %v\nwant %q", got, err, tc.want)
			}
		})
	}
	if _, err := machineCgroups([]byte("1:cpu:/\n"), []byte("41 22 0:38 / /work rw - ext4 /dev/vda rw\n"), "x"); err == nil {
		t.Error("machineCgroups without any cgroup mount found somewhere to make the machine's cgroups")
	}
}

// TestCgroupNames checks that a lab's machines are found by their cgroup
// name and that no other lab's are: the prefix ends in a dot, which a lab
// name cannot hold, so lab "a" never claims lab "a-b"'s cgroups.
func TestCgroupNames(t *testing.T) {
	if n := cgroupName("a", "master-1"); !strings.HasPrefix(n, cgroupPrefix("a")) {
		t.Errorf("%s lacks its lab's prefix", n)
	}
	if strings.HasPrefix(cgroupName("a-b", "master-1"), cgroupPrefix("a")) {
		t.Error(`lab "a" claims lab "a-b"'s cgroups`)
	}
}

func TestRemoveCgroupsDepthFirst(t *testing.T) {
	// A plain directory tree stands in for a cgroup tree: rmdir works the same on both.
	root := t.TempDir()
	top := filepath.Join(root, "kprov-lab.demo.master-1")
	for _, d := range []string{"kubepods/burstable/pod1/c1", "kubepods/besteffort", "system.slice/containerd.service"} {
		if err := os.MkdirAll(filepath.Join(top, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := removeCgroups(t.Context(), []string{top, filepath.Join(root, "gone-already")}); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("left %v", entries)
	}
}

func TestNspawnFlags(t *testing.T) {
	m := &MachineState{Name: "master-1", Netns: "kprov-demo.master-1", Merged: "/labs/demo/machines/master-1/merged"}
	args := nspawnArgs(m)
	for _, want := range []string{"--capability=all", "--system-call-filter=@keyring", "--register=no", "--keep-unit"} {
		if !slices.Contains(args, want) {
			t.Errorf("systemd-nspawn arguments lack %s: %q", want, args)
		}
	}
	env := nspawnEnv([]string{"PATH=/usr/bin", "SYSTEMD_NSPAWN_API_VFS_WRITABLE=1", "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1", "HOME=/root"})
	if !slices.Equal(env, []string{"PATH=/usr/bin", "HOME=/root"}) {
		t.Errorf("systemd-nspawn's environment: %q", env)
	}
}
