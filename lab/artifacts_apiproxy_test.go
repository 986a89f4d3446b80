package lab

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/charmbracelet/log"
)

// The throwaway module holds every non-test file of package apiproxy as it
// is on disk, and a main that imports it by the module's path.
func TestAPIProxyBuildFiles(t *testing.T) {
	rel, b, err := apiProxyBuildOf()
	if err != nil {
		t.Fatal(err)
	}
	sources, err := filepath.Glob("../apiproxy/*.go")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"cmd/kprov-apiproxy/main.go"}
	for _, f := range sources {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		name := "apiproxy/" + filepath.Base(f)
		want = append(want, name)
		disk, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b.files[name], disk) {
			t.Errorf("the build's %s differs from %s", name, f)
		}
	}
	slices.Sort(want)
	if got := slices.Sorted(maps.Keys(b.files)); !slices.Equal(got, want) {
		t.Errorf("module files %q, want %q", got, want)
	}
	if len(want) < 3 {
		t.Errorf("only %q: the embedded source lost package apiproxy's files", want)
	}
	main := string(b.files["cmd/kprov-apiproxy/main.go"])
	if !strings.Contains(main, `"kprov.local/artifacts/apiproxy"`) || !strings.Contains(main, "os.Exit(apiproxy.Main(os.Args[1:]))") {
		t.Errorf("generated main:\n%s", main)
	}
	if !slices.Equal(b.pkgs, []string{"kprov.local/artifacts/cmd/kprov-apiproxy"}) || len(b.gets) != 0 {
		t.Errorf("build packages %q, go get %q; want the one command and nothing to download", b.pkgs, b.gets)
	}
	if !regexp.MustCompile(`^apiproxy-[0-9a-f]{12}/kprov-apiproxy$`).MatchString(rel) {
		t.Errorf("cache path %q, want apiproxy-<12 hex>/kprov-apiproxy", rel)
	}
}

// A changed source, or a file moved between names, is another directory,
// so the cache builds it again; the same files are the same directory.
func TestAPIProxyDirFollowsTheSource(t *testing.T) {
	files := func(src fstest.MapFS) map[string][]byte {
		t.Helper()
		f, err := apiProxyFiles(src)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	base := fstest.MapFS{
		"proxy.go":      {Data: []byte("package apiproxy\n")},
		"main.go":       {Data: []byte("package apiproxy\n\nfunc Main([]string) int { return 0 }\n")},
		"proxy_test.go": {Data: []byte("package apiproxy\n")},
	}
	dir := apiProxyDir(files(base))
	if again := apiProxyDir(files(base)); again != dir {
		t.Errorf("the same source gave %s, then %s", dir, again)
	}
	withTest := maps.Clone(base)
	withTest["proxy_test.go"] = &fstest.MapFile{Data: []byte("package apiproxy // changed test\n")}
	if got := apiProxyDir(files(withTest)); got != dir {
		t.Errorf("a changed test file moved the directory from %s to %s", dir, got)
	}
	changed := maps.Clone(base)
	changed["proxy.go"] = &fstest.MapFile{Data: []byte("package apiproxy // changed\n")}
	if got := apiProxyDir(files(changed)); got == dir {
		t.Errorf("a changed proxy.go kept directory %s", dir)
	}
	renamed := fstest.MapFS{"proxy2.go": base["proxy.go"], "main.go": base["main.go"]}
	if got := apiProxyDir(files(renamed)); got == dir {
		t.Errorf("a renamed file kept directory %s", dir)
	}
	if _, err := apiProxyFiles(fstest.MapFS{"x_test.go": base["proxy_test.go"]}); err == nil {
		t.Error("a source with only tests was accepted")
	}
}

// The real build: a static binary that runs and, with no upstreams file,
// exits 2 as the systemd unit expects of a bad start.
func TestBuildAPIProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("builds kprov-apiproxy with the go command")
	}
	_, b, err := apiProxyBuildOf()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if err := buildInModule(t.Context(), b, out, log.New(io.Discard)); err != nil {
		if errors.Is(err, ErrToolchain) {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "apiproxy.upstreams")
	cmd := exec.CommandContext(t.Context(), filepath.Join(out, apiProxyName), "--listen", "127.0.0.1:0", "--upstreams", missing)
	stderr, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("kprov-apiproxy with a missing upstreams file: %v, want exit status 2; output:\n%s", err, stderr)
	}
	if !strings.Contains(string(stderr), missing) {
		t.Errorf("the error does not name the file:\n%s", stderr)
	}
}
