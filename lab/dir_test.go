package lab

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/charmbracelet/log"
)

// writeTree makes each file (with its parent directories) under dir.
func writeTree(t *testing.T, dir string, files ...string) {
	t.Helper()
	for _, f := range files {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// treeFiles lists every regular file under dir, relative to it.
func treeFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// sourceTree is what a source folder wrongly given as --dir holds.
var sourceTree = []string{"go.mod", "main.go", "machines/notes.txt", "docs/lab.md"}

// TestDownRefusesForeignDir is the accident that wiped a source folder:
// `lab down --dir DIR` on a directory that is not a lab's. Down refuses it
// before writing or removing anything, and leaves every file in place.
func TestDownRefusesForeignDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("Down needs root before it looks at the directory")
	}
	dir := t.TempDir()
	writeTree(t, dir, sourceTree...)
	err := Down(context.Background(), "lab-down-test", dir, log.New(io.Discard))
	if !errors.Is(err, ErrNotLabDir) {
		t.Fatalf("Down of a source folder: %v, want ErrNotLabDir", err)
	}
	if got := treeFiles(t, dir); !slices.Equal(got, []string{"docs/lab.md", "go.mod", "machines/notes.txt", "main.go"}) {
		t.Errorf("after the refused down the folder holds %v", got)
	}
}

func TestCheckLabDir(t *testing.T) {
	root := t.TempDir()
	missing := filepath.Join(root, "missing")
	empty := filepath.Join(root, "empty")
	lab := filepath.Join(root, "lab")
	foreign := filepath.Join(root, "foreign")
	linked := filepath.Join(root, "linked")
	os.Mkdir(empty, 0o755)
	writeTree(t, lab, stateFile, "notes.txt")
	writeTree(t, foreign, sourceTree...)
	writeTree(t, linked, "go.mod")
	// A state file that is a link to another lab's does not make a directory a lab's.
	if err := os.Symlink(filepath.Join(lab, stateFile), filepath.Join(linked, stateFile)); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]error{missing: nil, empty: nil, lab: nil, foreign: ErrNotLabDir, linked: ErrNotLabDir} {
		if err := checkLabDir(dir); !errors.Is(err, want) || (want == nil && err != nil) {
			t.Errorf("checkLabDir(%s) = %v, want %v", filepath.Base(dir), err, want)
		}
	}
}

func TestRemoveLabDir(t *testing.T) {
	labMade := []string{
		stateFile, ".lock", IdentityFile, IdentityFile + ".pub", KnownHostsFile, InventoryFile,
		"." + stateFile + ".tmp-123", // a crash during an atomic write
		"machines/master-1/upper/etc/hostname", "machines/master-1/console.log", "machines/master-1/ssh_host_ed25519_key",
		".kprov/demo/pki/ca.key", // kprov apply's state for the lab's cluster "demo"
	}

	t.Run("only what the lab made: the directory goes", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "lab")
		writeTree(t, dir, labMade...)
		kept, err := removeLabDir(dir, "demo")
		if err != nil || len(kept) != 0 {
			t.Fatalf("removeLabDir = %v, %v", kept, err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("lab directory left: %v", err)
		}
	})

	t.Run("other files stay, and the directory with them", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "lab")
		writeTree(t, dir, labMade...)
		writeTree(t, dir, "notes.txt", "src/main.go", ".kprov/other-cluster/state.json", ".state.json.bak")
		kept, err := removeLabDir(dir, "demo")
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{".kprov", ".state.json.bak", "notes.txt", "src"}; !slices.Equal(kept, want) {
			t.Errorf("kept %v, want %v", kept, want)
		}
		want := []string{".kprov/other-cluster/state.json", ".state.json.bak", "notes.txt", "src/main.go"}
		if got := treeFiles(t, dir); !slices.Equal(got, want) {
			t.Errorf("left %v, want %v", got, want)
		}
	})

	t.Run("a lab name that is a link elsewhere is removed, not followed", func(t *testing.T) {
		root := t.TempDir()
		dir, elsewhere := filepath.Join(root, "lab"), filepath.Join(root, "elsewhere")
		writeTree(t, dir, stateFile)
		writeTree(t, elsewhere, "precious.txt")
		if err := os.Symlink(elsewhere, filepath.Join(dir, "machines")); err != nil {
			t.Fatal(err)
		}
		if _, err := removeLabDir(dir, "demo"); err != nil {
			t.Fatal(err)
		}
		if got := treeFiles(t, elsewhere); !slices.Equal(got, []string{"precious.txt"}) {
			t.Errorf("the link's target lost files: %v", got)
		}
	})
}
