package roles

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/txtar"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/templates"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

// issued is the fixed issuing time of every test PKI.
var issued = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// renderCase is an inventory rendered to a golden file.
type renderCase struct {
	name      string
	inventory string
	opts      func(inv *inventory.Inventory) Options
}

func renderCases() []renderCase {
	return []renderCase{
		{name: "single", inventory: "../examples/single.kprov.hcl"},
		{name: "ha-stacked", inventory: "../examples/ha-stacked.kprov.hcl"},
		{name: "ha-external", inventory: "../examples/ha-external.kprov.hcl"},
		{name: "openshift", inventory: "../examples/openshift.kprov.hcl"},
		{name: "masters-only", inventory: "testdata/inventories/masters-only.kprov.hcl"},
		{name: "templates-override", inventory: "testdata/inventories/templates-override.kprov.hcl"},
		{name: "v1beta3", inventory: "testdata/inventories/v1beta3.kprov.hcl"},
		{name: "images", inventory: "testdata/inventories/images.kprov.hcl"},
		{name: "external-etcd-fresh", inventory: "testdata/inventories/external-etcd.kprov.hcl"},
		{name: "pod-network-none", inventory: "testdata/inventories/pod-network-none.kprov.hcl"},
		{
			// A host like the lab's machines: cgroup v1, an overlayfs root,
			// no CAP_SYS_RESOURCE; systemd is init. Its quirks follow from
			// these facts alone.
			name: "runtime-quirks", inventory: "../examples/single.kprov.hcl",
			opts: func(inv *inventory.Inventory) Options {
				rt := plan.RuntimeFacts{CgroupVersion: 1, SystemdInit: true, RootFS: "overlayfs", ContainerdPath: "/usr/bin/containerd"}
				return Options{Facts: map[string]*plan.HostFacts{"node-1": {Reachable: true, Runtime: &rt}}}
			},
		},
		{
			name: "external-etcd-formed", inventory: "testdata/inventories/external-etcd.kprov.hcl",
			opts: func(inv *inventory.Inventory) Options {
				return Options{EtcdBootstrap: FormedEtcdBootstrap(inv.Topology.EtcdMembers)}
			},
		},
	}
}

// loadInventory loads an inventory that must be valid (warnings allowed).
func loadInventory(t *testing.T, path string) *inventory.Inventory {
	t.Helper()
	inv, diags := inventory.Load(path, inventory.Options{})
	if diags.HasErrors() {
		t.Fatalf("%s: %s", path, diags.Error())
	}
	return inv
}

// newState creates a fresh PKI for inv in a new temporary state directory.
// The test PKI is made once per test binary for each distinct request
// (generating CAs and keys is most of this package's test time), in a
// directory TestMain removes. Tests only read it.
var (
	stateMu    sync.Mutex
	stateRoot  string
	stateCache = map[string]*pki.State{}
)

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "kprov-roles-pki-")
	if err != nil {
		panic(err)
	}
	stateRoot = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// newState returns the shared test PKI for inv's request.
func newState(t *testing.T, inv *inventory.Inventory) *pki.State {
	t.Helper()
	req := PKIRequest(inv)
	key, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	stateMu.Lock()
	defer stateMu.Unlock()
	if st, ok := stateCache[string(key)]; ok {
		return st
	}
	st, _, err := pki.Ensure(filepath.Join(stateRoot, fmt.Sprint(len(stateCache))), req, issued)
	if err != nil {
		t.Fatal(err)
	}
	stateCache[string(key)] = st
	return st
}

func render(t *testing.T, c renderCase, inv *inventory.Inventory, st *pki.State) *Rendering {
	t.Helper()
	set, err := templates.Load(inv.Cluster.TemplatesDir)
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{}
	if c.opts != nil {
		opts = c.opts(inv)
	}
	opts.Templates = set
	r, err := Render(inv, st, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestGolden renders each case with a fresh, random PKI and compares the
// result with testdata/golden/NAME.txtar (go test ./roles -update rewrites them).
//
// The golden files show File.Redacted, the same bytes `kprov render`
// writes without --include-secrets: private keys and the join secrets are
// placeholders there already. What else varies with the generated keys is
// replaced by exact substitution of the values the State holds: each PEM
// certificate body, the discovery hash and the hash in the etcd cluster
// token. Nothing is matched by pattern but PEM armour, so a change anywhere
// else in a file shows in the diff. TestDeterministic and TestSecrets check
// the real Content.
func TestGolden(t *testing.T) {
	for _, c := range renderCases() {
		t.Run(c.name, func(t *testing.T) {
			inv := loadInventory(t, c.inventory)
			st := newState(t, inv)
			got := goldenArchive(render(t, c, inv, st), st)
			path := filepath.Join("testdata", "golden", c.name+".txtar")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./roles -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("rendering differs from %s (run go test ./roles -update and review the diff):\n%s", path, lineDiff(string(want), string(got)))
			}
		})
	}
}

// TestDeterministic renders each case twice from the same state directory,
// loaded again in between as a second kprov run would, and wants
// byte-identical files in the same order.
func TestDeterministic(t *testing.T) {
	for _, c := range renderCases() {
		t.Run(c.name, func(t *testing.T) {
			inv := loadInventory(t, c.inventory)
			st := newState(t, inv)
			first := render(t, c, inv, st)
			again, _, err := pki.Ensure(st.Dir, PKIRequest(inv), issued.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			second := render(t, c, loadInventory(t, c.inventory), again)
			if a, b := fingerprint(first), fingerprint(second); a != b {
				t.Errorf("two renders differ:\n%s", lineDiff(a, b))
			}
		})
	}
}

// fingerprint lists every file with the checksums of its real and redacted content.
func fingerprint(r *Rendering) string {
	var b strings.Builder
	for _, h := range r.Hosts {
		for _, f := range h.Files {
			fmt.Fprintf(&b, "%s %s %04o %t %s %x\n", h.Name, f.Path, f.Mode, f.Secret, f.SHA256(), f.Redacted)
		}
	}
	return b.String()
}

var pemBlock = regexp.MustCompile(`(?s)(-----BEGIN [A-Z ]+-----\n).*?(\n-----END [A-Z ]+-----)`)

// goldenArchive writes a rendering as a txtar archive a reviewer can read:
// the per-host data in the comment, then every file.
func goldenArchive(r *Rendering, st *pki.State) []byte {
	pairs := []string{st.DiscoveryHash(), "sha256:<discovery hash of the generated CA>"}
	if r.EtcdInitialClusterToken != "" {
		pairs = append(pairs, r.EtcdInitialClusterToken, etcdTokenPlaceholder(r))
	}
	replacer := strings.NewReplacer(pairs...)
	normalize := func(b []byte) []byte {
		b = pemBlock.ReplaceAll(b, []byte("${1}<generated>${2}"))
		return []byte(replacer.Replace(string(b)))
	}
	var comment strings.Builder
	fmt.Fprintf(&comment, "cluster %s, %s", r.Cluster, r.KubeadmAPIVersion)
	if r.EtcdInitialClusterToken != "" {
		fmt.Fprintf(&comment, ", etcd initial-cluster-token %s", etcdTokenPlaceholder(r))
	}
	comment.WriteString("\n")
	ar := &txtar.Archive{}
	for _, h := range r.Hosts {
		fmt.Fprintf(&comment, "\nhost %s (%s) roles %v\n", h.Name, h.Address, h.Roles)
		if n := h.Node; n != nil {
			fmt.Fprintf(&comment, "  node: %s: kubeadm %s\n", n.Kubeadm, strings.Join(n.KubeadmArgs, " "))
			for _, k := range slices.Sorted(maps.Keys(n.Labels)) {
				fmt.Fprintf(&comment, "  label %s=%s\n", k, n.Labels[k])
			}
			for _, tn := range n.Taints {
				fmt.Fprintf(&comment, "  taint %s\n", tn)
			}
		}
		if e := h.Etcd; e != nil {
			fmt.Fprintf(&comment, "  etcd member %s: client %s, peer %s, %s with %v\n", e.Name, e.ClientURL, e.PeerURL, e.Bootstrap.State, e.Bootstrap.Cluster)
		}
		fmt.Fprintf(&comment, "  units %v\n", h.Units)
		for _, p := range slices.Sorted(maps.Keys(h.OnChange)) {
			fmt.Fprintf(&comment, "  on change of %s: %s\n", p, strings.Join(h.OnChange[p], "; "))
		}
		for _, f := range h.Files {
			name := fmt.Sprintf("%s%s %04o %s", h.Name, f.Path, f.Mode.Perm(), f.Source)
			if f.Secret {
				name += " secret"
			}
			ar.Files = append(ar.Files, txtar.File{Name: name, Data: normalize(f.Redacted)})
		}
	}
	ar.Comment = []byte(comment.String())
	return txtar.Format(ar)
}

func etcdTokenPlaceholder(r *Rendering) string {
	return "kprov-" + r.Cluster + "-<hash of the generated etcd CA>"
}

// lineDiff shows the first lines where want and got differ, with context.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			lo := max(0, i-3)
			var b strings.Builder
			for j := lo; j < i; j++ {
				fmt.Fprintf(&b, "  %s\n", w[j])
			}
			for j := i; j < min(i+5, len(w)); j++ {
				fmt.Fprintf(&b, "- %s\n", w[j])
			}
			for j := i; j < min(i+5, len(g)); j++ {
				fmt.Fprintf(&b, "+ %s\n", g[j])
			}
			return fmt.Sprintf("line %d:\n%s", i+1, b.String())
		}
	}
	return "(no difference)"
}
