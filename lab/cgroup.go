package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Each machine runs in a cgroup of its own in every cgroup hierarchy, a
// child of the cgroup of the process that boots it. Without that, every
// machine's systemd (and later its kubelet) would take the same cgroup as
// its root and manage the others' processes; and on a host without systemd
// nothing else would make one. The machine's cgroups are named after the
// lab and the machine, so Down finds them again after a crash, and removed
// depth first (kubelet and systemd make cgroups inside) once every process
// of the machine is gone.

// cgroupPrefix is what the cgroup of every machine of the lab is named with.
// No unit or cgroup kprov makes inside a machine starts with "kprov-lab.".
func cgroupPrefix(lab string) string { return "kprov-lab." + lab + "." }

// cgroupName is the name of the machine's cgroup in every hierarchy.
func cgroupName(lab, machine string) string { return cgroupPrefix(lab) + machine }

// cgroupMount is where one cgroup hierarchy is mounted.
type cgroupMount struct {
	// Controllers are the v1 controllers and name= options of the
	// hierarchy (sorted); none for the v2 (unified) hierarchy.
	Controllers []string
	V2          bool
	// Root is the hierarchy's path shown at Point (mountinfo's fourth field).
	Root, Point string
}

// cgroupV1Options are mount options of a v1 cgroup mount that name no controller.
var cgroupV1Options = []string{"rw", "ro", "noprefix", "xattr", "clone_children", "cpuset_v2_mode", "favordynmods", "none"}

// parseCgroupMounts reads mountinfo text and returns its cgroup mounts.
func parseCgroupMounts(mountinfo []byte) []cgroupMount {
	var out []cgroupMount
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 {
			continue
		}
		m := cgroupMount{Root: unescapeMountinfo(f[3]), Point: unescapeMountinfo(f[4])}
		switch g[0] {
		case "cgroup2":
			m.V2 = true
		case "cgroup":
			for _, o := range strings.Split(g[2], ",") {
				if !slices.Contains(cgroupV1Options, o) && !strings.HasPrefix(o, "release_agent=") {
					m.Controllers = append(m.Controllers, o)
				}
			}
			slices.Sort(m.Controllers)
		default:
			continue
		}
		out = append(out, m)
	}
	return out
}

// machineCgroups returns the directory of the cgroup named name, a child of
// the process's own cgroup, in each hierarchy the process belongs to
// (procCgroup is /proc/self/cgroup, mountinfo /proc/self/mountinfo). A
// hierarchy that is not mounted, or whose mount does not show the
// process's cgroup, is skipped: nothing could be made in it.
func machineCgroups(procCgroup, mountinfo []byte, name string) ([]string, error) {
	mounts := parseCgroupMounts(mountinfo)
	var dirs []string
	for line := range strings.Lines(string(procCgroup)) {
		// ID:CONTROLLERS:PATH; CONTROLLERS is empty for the v2 hierarchy.
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) != 3 {
			continue
		}
		var want []string
		if parts[1] != "" {
			want = strings.Split(parts[1], ",")
		}
		path := parts[2]
		i := slices.IndexFunc(mounts, func(m cgroupMount) bool {
			if (len(want) == 0) != m.V2 {
				return false
			}
			for _, c := range want {
				if !slices.Contains(m.Controllers, c) {
					return false
				}
			}
			return m.Root == "/" || path == m.Root || strings.HasPrefix(path, m.Root+"/")
		})
		if i < 0 {
			continue
		}
		m := mounts[i]
		rel := path
		if m.Root != "/" {
			rel = strings.TrimPrefix(path, m.Root)
		}
		dirs = append(dirs, filepath.Join(m.Point, rel, name))
	}
	if len(dirs) == 0 {
		return nil, errors.New("no cgroup hierarchy mounted that shows this process's cgroup")
	}
	return dirs, nil
}

// ownMachineCgroups is machineCgroups for the calling process.
func ownMachineCgroups(name string) ([]string, error) {
	procCgroup, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return machineCgroups(procCgroup, mountinfo, name)
}

// createCgroups makes each cgroup directory. A new v1 cpuset cgroup has no
// CPUs and no memory nodes, and no process may join it until it has some:
// it gets its parent's.
func createCgroups(dirs []string) error {
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("cgroup: %w", err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			own, err := os.ReadFile(filepath.Join(d, f))
			if err != nil || len(bytes.TrimSpace(own)) > 0 {
				continue
			}
			parent, err := os.ReadFile(filepath.Join(filepath.Dir(d), f))
			if err != nil {
				return fmt.Errorf("cgroup: %w", err)
			}
			if err := os.WriteFile(filepath.Join(d, f), parent, 0o644); err != nil {
				return fmt.Errorf("cgroup %s: %w", filepath.Join(d, f), err)
			}
		}
	}
	return nil
}

// isCgroupV2 reports whether dir is on the cgroup v2 file system.
func isCgroupV2(dir string) (bool, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return false, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	const cgroup2SuperMagic = 0x63677270
	return st.Type == cgroup2SuperMagic, nil
}

// startInCgroups starts cmd as a process in the cgroups dirs from its first
// instruction on, so that nothing it forks stays behind in the caller's.
// Moving it after Start would race its first forks, and moving this whole
// process would take every other goroutine with it. So one OS thread, locked
// to a goroutine, joins the v1 cgroups alone (v1 places threads, not
// processes, through the tasks file) and forks cmd, which inherits them;
// the v2 cgroup is given to clone3 (CLONE_INTO_CGROUP). The thread is never
// unlocked: it exits with its goroutine, so nothing else ever runs on it.
func startInCgroups(cmd *exec.Cmd, dirs []string) error {
	var v1 []string
	v2 := ""
	for _, d := range dirs {
		isV2, err := isCgroupV2(d)
		if err != nil {
			return err
		}
		switch {
		case !isV2:
			v1 = append(v1, d)
		case v2 != "":
			return fmt.Errorf("cgroup: two v2 hierarchies (%s, %s)", v2, d)
		default:
			v2 = d
		}
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		tid := []byte(strconv.Itoa(syscall.Gettid()))
		for _, d := range v1 {
			if err := os.WriteFile(filepath.Join(d, "tasks"), tid, 0o644); err != nil {
				done <- fmt.Errorf("cgroup %s: join: %w", d, err)
				return
			}
		}
		if v2 != "" {
			f, err := os.Open(v2)
			if err != nil {
				done <- fmt.Errorf("cgroup: %w", err)
				return
			}
			defer f.Close()
			if cmd.SysProcAttr == nil {
				cmd.SysProcAttr = &syscall.SysProcAttr{}
			}
			cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, int(f.Fd())
		}
		err := cmd.Start()
		// Leave the machine's cgroups again: a goroutine that exits locked
		// ends its thread, except when it ran on the process's main thread,
		// which the runtime parks forever instead. Left in the machine's
		// cgroup, that thread would put this whole process among the
		// machine's, and stopping the machine kills those.
		for _, d := range v1 {
			if werr := os.WriteFile(filepath.Join(filepath.Dir(d), "tasks"), tid, 0o644); werr != nil && err == nil {
				err = fmt.Errorf("cgroup %s: leave: %w", filepath.Dir(d), werr)
			}
		}
		done <- err
	}()
	return <-done
}

// findCgroups walks every cgroup hierarchy mounted on the host for
// directories whose name match accepts. A match is not descended into, nor
// is any other lab's machine: the cgroups inside belong to that machine.
func findCgroups(match func(name string) bool) ([]string, error) {
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var found []string
	for _, m := range parseCgroupMounts(mountinfo) {
		err := filepath.WalkDir(m.Point, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				// A cgroup removed while walking is no longer there to find.
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if !d.IsDir() || p == m.Point {
				return nil
			}
			if match(d.Name()) {
				found = append(found, p)
				return filepath.SkipDir
			}
			if strings.HasPrefix(d.Name(), "kprov-lab.") {
				return filepath.SkipDir
			}
			return nil
		})
		if err != nil {
			return found, fmt.Errorf("find cgroups under %s: %w", m.Point, err)
		}
	}
	return found, nil
}

// cgroupPIDs lists the processes in each cgroup directory and below it.
func cgroupPIDs(dirs []string) ([]int, error) {
	var pids []int
	for _, top := range dirs {
		err := filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if !d.IsDir() {
				return nil
			}
			data, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			for _, f := range strings.Fields(string(data)) {
				// Never this process: it only forks machines from these cgroups.
				if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() && !slices.Contains(pids, pid) {
					pids = append(pids, pid)
				}
			}
			return nil
		})
		if err != nil {
			return pids, fmt.Errorf("cgroup %s: %w", top, err)
		}
	}
	return pids, nil
}

// killCgroups kills every process in the cgroups and below them until none
// is left: a process may fork between the listing and the signal.
func killCgroups(ctx context.Context, dirs []string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids, err := cgroupPIDs(dirs)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("processes %v still in the machine's cgroups after SIGKILL", pids)
		}
		killAll(pids)
		time.Sleep(100 * time.Millisecond)
	}
}

// removeCgroups removes each cgroup directory and every cgroup below it,
// deepest first. A cgroup whose last process has just been killed may still
// count it for a moment (EBUSY), so removal is retried for a few seconds.
func removeCgroups(ctx context.Context, dirs []string) error {
	var errs []error
	for _, top := range dirs {
		var tree []string
		err := filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if d.IsDir() {
				tree = append(tree, p)
			}
			return nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("cgroup %s: %w", top, err))
			continue
		}
		// WalkDir visits a directory before its children: backwards is deepest first.
		slices.Reverse(tree)
		for _, d := range tree {
			if err := rmdirCgroup(ctx, d); err != nil {
				errs = append(errs, err)
				break
			}
		}
	}
	return errors.Join(errs...)
}

func rmdirCgroup(ctx context.Context, dir string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := syscall.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
