package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// linkExists reports whether a network link of that name exists on the host.
func linkExists(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/class/net", name))
	return err == nil
}

// netnsExists reports whether the named network namespace is mounted.
func netnsExists(name string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", name))
	return err == nil
}

// listLinks returns the host's network link names starting with prefix.
func listLinks(prefix string) []string {
	entries, _ := os.ReadDir("/sys/class/net")
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// listNetns returns the named network namespaces starting with prefix.
func listNetns(prefix string) []string {
	entries, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// hostPrefixes returns every IPv4 prefix configured on the host, so a new lab subnet avoids them.
func hostPrefixes(ctx context.Context, run Runner) ([]netip.Prefix, error) {
	out, err := run.Run(ctx, "ip", "-o", "-4", "addr", "show")
	if err != nil {
		return nil, err
	}
	var used []netip.Prefix
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "inet" {
				if p, err := netip.ParsePrefix(f[i+1]); err == nil {
					used = append(used, p.Masked())
				}
			}
		}
	}
	return used, nil
}

// ensureBridge creates the lab's bridge with the gateway address. Forwarding
// is switched off on it: machines get a default route (kubeadm needs one to
// pick a node address) but nothing they send may leave the host.
func ensureBridge(ctx context.Context, run Runner, name string, gateway netip.Addr, subnet netip.Prefix) error {
	if !linkExists(name) {
		if _, err := run.Run(ctx, "ip", "link", "add", name, "type", "bridge"); err != nil {
			return fmt.Errorf("create bridge (does the kernel have bridge support?): %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join("/proc/sys/net/ipv4/conf", name, "forwarding"), []byte("0"), 0o644); err != nil {
		return fmt.Errorf("bridge %s: disable forwarding: %w", name, err)
	}
	if _, err := run.Run(ctx, "ip", "addr", "replace", netip.PrefixFrom(gateway, subnet.Bits()).String(), "dev", name); err != nil {
		return fmt.Errorf("bridge %s: %w", name, err)
	}
	if _, err := run.Run(ctx, "ip", "link", "set", name, "up"); err != nil {
		return fmt.Errorf("bridge %s: %w", name, err)
	}
	return nil
}

// deleteLink removes a host link if it exists.
func deleteLink(ctx context.Context, run Runner, name string) error {
	if !linkExists(name) {
		return nil
	}
	if _, err := run.Run(ctx, "ip", "link", "del", name); err != nil && linkExists(name) {
		return err
	}
	return nil
}

// deleteNetns removes a named network namespace if it exists.
func deleteNetns(ctx context.Context, run Runner, name string) error {
	if !netnsExists(name) {
		return nil
	}
	if _, err := run.Run(ctx, "ip", "netns", "del", name); err != nil && netnsExists(name) {
		return err
	}
	return nil
}

// netnsPIDs lists the processes inside a named network namespace.
func netnsPIDs(ctx context.Context, run Runner, name string) ([]int, error) {
	if !netnsExists(name) {
		return nil, nil
	}
	out, err := run.Run(ctx, "ip", "netns", "pids", name)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// processAlive reports whether pid is a live (not zombie) process.
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may itself hold spaces.
	i := strings.LastIndexByte(string(data), ')')
	return i >= 0 && i+2 < len(data) && data[i+2] != 'Z' && data[i+2] != 'X'
}

// processCmdline returns pid's command line arguments, nil if it is gone.
func processCmdline(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(data) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
}

// isNspawnFor reports whether pid is the systemd-nspawn booting merged; a
// recorded PID may have been reused by an unrelated process since.
func isNspawnFor(pid int, merged string) bool {
	args := processCmdline(pid)
	return processAlive(pid) && len(args) > 0 && filepath.Base(args[0]) == "systemd-nspawn" && slices.Contains(args, merged)
}

// nspawnPIDsUnder finds systemd-nspawn processes booting anything under dir,
// the ones a lost state file no longer names.
func nspawnPIDsUnder(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		args := processCmdline(pid)
		if len(args) == 0 || filepath.Base(args[0]) != "systemd-nspawn" {
			continue
		}
		for _, a := range args {
			if strings.HasPrefix(a, dir+string(filepath.Separator)) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// waitGone waits until none of pids is alive, or the timeout passes.
func waitGone(ctx context.Context, pids []int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		alive := false
		for _, p := range pids {
			if processAlive(p) {
				alive = true
				break
			}
		}
		if !alive {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// killAll sends SIGKILL to every pid, ignoring the ones already gone.
func killAll(pids []int) {
	for _, p := range pids {
		if err := syscall.Kill(p, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			continue
		}
	}
}

// mountsUnder returns the mount points at or below dir, deepest first, from /proc/self/mountinfo.
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseMountsUnder(f, dir)
}

// parseMountsUnder reads mountinfo text and returns the mount points at or below dir, deepest first.
func parseMountsUnder(r interface{ Read([]byte) (int, error) }, dir string) ([]string, error) {
	dir = filepath.Clean(dir)
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			if !slices.Contains(out, mp) {
				out = append(out, mp)
			}
		}
	}
	slices.SortStableFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out, sc.Err()
}

// unescapeMountinfo decodes the octal escapes (\040 for space) the kernel uses in mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// isMounted reports whether path is a mount point.
func isMounted(path string) bool {
	mps, err := mountsUnder(path)
	return err == nil && slices.Contains(mps, filepath.Clean(path))
}

// unmount unmounts path, detaching it lazily if something still holds it open.
func unmount(path string) error {
	for isMounted(path) {
		if err := syscall.Unmount(path, 0); err != nil {
			if errors.Is(err, syscall.EBUSY) {
				if err := syscall.Unmount(path, syscall.MNT_DETACH); err != nil {
					return fmt.Errorf("unmount %s: %w", path, err)
				}
				continue
			}
			if errors.Is(err, syscall.EINVAL) && !isMounted(path) {
				return nil
			}
			return fmt.Errorf("unmount %s: %w", path, err)
		}
	}
	return nil
}

// The host's inotify limits the lab needs. Every machine's systemd,
// containerd (its CNI configuration watcher), kubelet and API server take
// inotify instances from root's one per-user allowance, which the kernel
// shares across every container: the default 128 runs out with two
// Kubernetes labs up at once, and then containerd starts without its CRI
// plugin ("couldn't initialize inotify: too many open files") and kubeadm
// fails. Raised, never lowered.
var inotifyLimits = []struct {
	path string
	min  int
}{
	{"/proc/sys/fs/inotify/max_user_instances", 8192},
	{"/proc/sys/fs/inotify/max_user_watches", 1048576},
}

// raiseInotifyLimits raises the host's inotify limits to inotifyLimits.
func raiseInotifyLimits() error {
	for _, l := range inotifyLimits {
		b, err := os.ReadFile(l.path)
		if err != nil {
			return fmt.Errorf("read %s: %w", l.path, err)
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return fmt.Errorf("read %s: %q is not a number", l.path, b)
		}
		if n >= l.min {
			continue
		}
		if err := os.WriteFile(l.path, []byte(strconv.Itoa(l.min)), 0o644); err != nil {
			return fmt.Errorf("raise %s from %d to %d (lab machines share root's inotify allowance): %w", l.path, n, l.min, err)
		}
	}
	return nil
}
