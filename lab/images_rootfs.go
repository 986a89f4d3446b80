package lab

import (
	"cmp"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// kube-proxy programs iptables through the iptables commands, so its image
// carries them: the iptables-nft and iptables-legacy variants (which one
// plain `iptables` is follows the source root's Debian alternatives) and
// conntrack, each with every shared library it loads and the xtables
// extension modules iptables loads at run time. They come from a Debian
// root filesystem (the lab's: lab machines run Debian too), never from
// whatever the build host happens to have unless asked.

// kubeProxyCommands are taken from ROOT/usr/sbin; the first group must be
// there, the variants are taken when present.
var (
	kubeProxyCommands = []string{
		"iptables", "iptables-save", "iptables-restore",
		"ip6tables", "ip6tables-save", "ip6tables-restore",
		"conntrack",
	}
	kubeProxyOptionalCommands = []string{
		"iptables-nft", "iptables-nft-save", "iptables-nft-restore",
		"ip6tables-nft", "ip6tables-nft-save", "ip6tables-nft-restore",
		"iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore",
		"ip6tables-legacy", "ip6tables-legacy-save", "ip6tables-legacy-restore",
	}
)

// libraryDirs are where the dynamic loader looks, in its order, on a
// Debian amd64 system without an ld.so.cache (an image has none).
var libraryDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

// xtablesDir holds iptables' extension modules (Debian's XTABLES_LIBDIR).
const xtablesDir = "/usr/lib/x86_64-linux-gnu/xtables"

// rootFS reads files inside a root filesystem directory, resolving
// symlinks (absolute ones too) inside it rather than on this machine.
type rootFS struct{ dir string }

// resolve returns the path inside the root that p names after following
// every symlink in it.
func (r rootFS) resolve(p string) (string, error) {
	resolved := "/"
	rest := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
	for hops := 0; len(rest) > 0; {
		elem := rest[0]
		rest = rest[1:]
		if elem == "" || elem == "." {
			continue
		}
		if elem == ".." {
			resolved = path.Dir(resolved)
			continue
		}
		next := path.Join(resolved, elem)
		fi, err := os.Lstat(filepath.Join(r.dir, next))
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			resolved = next
			continue
		}
		if hops++; hops > 40 {
			return "", fmt.Errorf("%s: too many symlinks", p)
		}
		target, err := os.Readlink(filepath.Join(r.dir, next))
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			resolved = "/"
		}
		rest = append(strings.Split(strings.Trim(target, "/"), "/"), rest...)
	}
	return resolved, nil
}

// host is p's location on this machine.
func (r rootFS) host(p string) string { return filepath.Join(r.dir, filepath.FromSlash(p)) }

// elfDeps returns the loader (PT_INTERP) and the DT_NEEDED libraries of an ELF file.
func elfDeps(file string) (interp string, needed []string, err error) {
	f, err := elf.Open(file)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return "", nil, err
			}
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	needed, err = f.ImportedLibraries()
	return interp, needed, err
}

// kubeProxyFiles returns what kube-proxy's image needs from root besides
// kube-proxy: the commands as symlinks to their resolved binaries, those
// binaries, the xtables modules, and every shared library any of them
// loads, each copied as a regular file to where the loader looks.
func kubeProxyFiles(root string) ([]layerFile, error) {
	r := rootFS{dir: root}
	files := map[string]layerFile{}
	var elves []string // image paths whose ELF dependencies are still to add
	addFile := func(imagePath, resolved string, mode int64) {
		if _, ok := files[imagePath]; ok {
			return
		}
		files[imagePath] = layerFile{Path: imagePath, Mode: mode, Source: r.host(resolved)}
		elves = append(elves, imagePath)
	}
	for i, cmd := range append(slices.Clone(kubeProxyCommands), kubeProxyOptionalCommands...) {
		p := "/usr/sbin/" + cmd
		resolved, err := r.resolve(p)
		if err != nil {
			if i >= len(kubeProxyCommands) && errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("kube-proxy image: %s in %s: %w", p, root, err)
		}
		if resolved == p {
			addFile(p, resolved, 0o755)
			continue
		}
		// The binary goes where it is in the root; the command links to it.
		addFile(resolved, resolved, 0o755)
		link := resolved
		if path.Dir(resolved) == path.Dir(p) {
			link = path.Base(resolved)
		}
		files[p] = layerFile{Path: p, Link: link}
	}
	modules, err := r.resolve(xtablesDir)
	if err != nil {
		return nil, fmt.Errorf("kube-proxy image: iptables modules %s in %s: %w", xtablesDir, root, err)
	}
	entries, err := os.ReadDir(r.host(modules))
	if err != nil {
		return nil, fmt.Errorf("kube-proxy image: %w", err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".so") {
			continue
		}
		resolved, err := r.resolve(path.Join(modules, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("kube-proxy image: %w", err)
		}
		addFile(path.Join(xtablesDir, e.Name()), resolved, 0o644)
	}
	if p, err := r.resolve("/etc/protocols"); err == nil {
		files["/etc/protocols"] = layerFile{Path: "/etc/protocols", Mode: 0o644, Source: r.host(p)}
	}
	for len(elves) > 0 {
		f := files[elves[0]]
		elves = elves[1:]
		interp, needed, err := elfDeps(f.Source)
		if err != nil {
			return nil, fmt.Errorf("kube-proxy image: %s: %w", f.Path, err)
		}
		if interp != "" {
			resolved, err := r.resolve(interp)
			if err != nil {
				return nil, fmt.Errorf("kube-proxy image: loader of %s: %w", f.Path, err)
			}
			addFile(interp, resolved, 0o755)
		}
		for _, lib := range needed {
			dir, resolved, err := r.findLibrary(lib)
			if err != nil {
				return nil, fmt.Errorf("kube-proxy image: %s needs %s: %w", f.Path, lib, err)
			}
			addFile(path.Join(dir, lib), resolved, 0o644)
		}
	}
	out := make([]layerFile, 0, len(files))
	for _, f := range files {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b layerFile) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}

// findLibrary looks lib up in libraryDirs inside the root and returns the
// directory it was found in (itself resolved, so the image needs no
// directory symlinks) and the file it resolves to.
func (r rootFS) findLibrary(lib string) (dir, resolved string, err error) {
	for _, d := range libraryDirs {
		p, err := r.resolve(path.Join(d, lib))
		if err != nil {
			continue
		}
		if fi, err := os.Stat(r.host(p)); err == nil && fi.Mode().IsRegular() {
			rd, err := r.resolve(d)
			if err != nil {
				return "", "", err
			}
			return rd, p, nil
		}
	}
	return "", "", fmt.Errorf("not found in %s of %s", strings.Join(libraryDirs, ", "), r.dir)
}

// iptablesRootCandidates are the root filesystems BuildArtifacts looks in
// for kube-proxy's iptables when Versions.IptablesRoot is empty: the lab's
// cached root filesystems next to the artifact cache and in
// DefaultCacheDir, the current recipe's first, then the newest.
func iptablesRootCandidates(artifactsDir string) []string {
	current := rootfsKey(Suite, basePackages)
	var out []string
	for _, cache := range []string{filepath.Join(filepath.Dir(artifactsDir), "rootfs"), filepath.Join(DefaultCacheDir, "rootfs")} {
		entries, err := os.ReadDir(cache)
		if err != nil {
			continue
		}
		type cand struct {
			dir string
			mod int64
		}
		var cands []cand
		for _, e := range entries {
			if !e.IsDir() || strings.Contains(e.Name(), ".") {
				continue // .building, .lock
			}
			fi, err := e.Info()
			if err != nil {
				continue
			}
			mod := fi.ModTime().UnixNano()
			if e.Name() == current {
				mod = 1<<63 - 1
			}
			cands = append(cands, cand{filepath.Join(cache, e.Name()), mod})
		}
		slices.SortFunc(cands, func(a, b cand) int { return cmp.Compare(b.mod, a.mod) })
		for _, c := range cands {
			if !slices.Contains(out, c.dir) {
				out = append(out, c.dir)
			}
		}
	}
	return out
}

// findIptablesRoot returns the first candidate root that has iptables and
// conntrack, or "" when none has.
func findIptablesRoot(candidates []string) string {
	for _, root := range candidates {
		r := rootFS{dir: root}
		ok := true
		for _, cmd := range kubeProxyCommands {
			if _, err := r.resolve("/usr/sbin/" + cmd); err != nil {
				ok = false
				break
			}
		}
		if ok {
			return root
		}
	}
	return ""
}
