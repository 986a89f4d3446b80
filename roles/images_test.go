package roles

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
)

// realKubeadm is the kubeadm kprov lab artifacts caches for the lab's version.
const realKubeadm = "/var/cache/kprov/artifacts/kubernetes-v1.37.2/kubeadm"

// TestKubeadmImagesMatchKubeadm asks a real kubeadm which images it needs
// and compares with kprov's table, with kubeadm's own etcd tag (kprov
// overrides it, so only the tag differs in a cluster).
func TestKubeadmImagesMatchKubeadm(t *testing.T) {
	if _, err := os.Stat(realKubeadm); err != nil {
		t.Skipf("no cached kubeadm to compare with (%v); kprov lab artifacts builds it", err)
	}
	out, err := exec.Command(realKubeadm, "config", "images", "list", "--kubernetes-version", "v1.37.2").Output()
	if err != nil {
		t.Fatalf("kubeadm config images list: %v", err)
	}
	got := strings.Fields(string(out))
	want, err := KubeadmImages("1.37.2", kubeadmImagesByMinor[37].Etcd)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("kubeadm lists\n  %s\nkprov's table says\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestNodeImages(t *testing.T) {
	stacked := loadInventory(t, filepath.Join("testdata", "inventories", "images.kprov.hcl"))
	external := loadInventory(t, filepath.Join("testdata", "inventories", "external-etcd.kprov.hcl"))
	r := "registry.k8s.io/"
	node := []string{r + "kube-proxy:v1.37.2", r + "coredns/coredns:v1.14.6", r + "pause:3.10.2"}
	cp := []string{r + "kube-apiserver:v1.37.2", r + "kube-controller-manager:v1.37.2", r + "kube-scheduler:v1.37.2"}
	for _, c := range []struct {
		inv  *inventory.Inventory
		host string
		want []string
	}{
		{stacked, "master-1", append(append(slices.Clone(cp), node...), r+"etcd:3.6.16-0")},
		{stacked, "compute-1", node},
		{external, external.Topology.Masters[0], append(slices.Clone(cp), node...)},
		{external, external.Topology.EtcdMembers[0], nil},
	} {
		got, err := NodeImages(c.inv, c.inv.Host(c.host))
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s %s: got %v, %v; want %v", c.inv.Cluster.Name, c.host, got, err, c.want)
		}
	}
	if got, err := SandboxImage("1.37.2"); got != r+"pause:3.10.2" || err != nil {
		t.Errorf("sandbox image %q, %v", got, err)
	}
	if _, err := KubeadmImages("1.36.0", ""); err == nil || !strings.Contains(err.Error(), "it knows 1.37") {
		t.Errorf("an unknown minor: %v", err)
	}
}

// digestOf is a made-up digest for a test image.
func digestOf(s string) string {
	return "sha256:" + strings.Repeat(string("0123456789abcdef"[len(s)%16]), 63) + "0"
}

// testArchives is what reading images.kprov.hcl's archives would give:
// the control-plane images in one, the images every node needs in the other.
func testArchives(inv *inventory.Inventory) []plan.ImageArchive {
	r := "registry.k8s.io/"
	holds := map[string][]string{
		"control-plane.tar": {r + "kube-apiserver:v1.37.2", r + "kube-controller-manager:v1.37.2", r + "kube-scheduler:v1.37.2", r + "etcd:3.6.16-0"},
		"node.tar":          {r + "kube-proxy:v1.37.2", r + "coredns/coredns:v1.14.6", r + "pause:3.10.2"},
	}
	var out []plan.ImageArchive
	for _, a := range inv.Images {
		ar := plan.ImageArchive{Path: a.Path, SHA256: a.SHA256}
		for _, ref := range holds[filepath.Base(a.Path)] {
			ar.Images = append(ar.Images, plan.ImageRef{Ref: ref, Digest: digestOf(ref)})
		}
		out = append(out, ar)
	}
	return out
}

// TestPlanImages: an archive is imported on a node that lacks one of its
// images it needs or has one with another digest, and on no node that has
// them all.
func TestPlanImages(t *testing.T) {
	inv := loadInventory(t, filepath.Join("testdata", "inventories", "images.kprov.hcl"))
	st := newState(t, inv)
	archives := testArchives(inv)
	all := map[string]string{}
	for _, ar := range archives {
		for _, im := range ar.Images {
			all[im.Ref] = im.Digest
		}
	}
	with := func(edit func(map[string]string)) map[string]string {
		m := map[string]string{}
		for k, v := range all {
			m[k] = v
		}
		if edit != nil {
			edit(m)
		}
		return m
	}
	for _, c := range []struct {
		name   string
		master map[string]string
		node   map[string]string
		want   []string // host:archive of each import step, in order
		reason string   // in the first step's reason
	}{
		{name: "fresh", want: []string{"master-1:control-plane.tar", "master-1:node.tar", "compute-1:node.tar"},
			reason: "containerd's images are unknown (ctr not found)"},
		{name: "all-present", master: with(nil), node: with(nil)},
		// A worker needs no control-plane image: the archive of them never reaches it.
		{name: "worker-lacks-control-plane", master: with(nil), node: with(func(m map[string]string) { delete(m, "registry.k8s.io/kube-apiserver:v1.37.2") })},
		{name: "one-missing", master: with(func(m map[string]string) { delete(m, "registry.k8s.io/pause:3.10.2") }), node: with(nil),
			want: []string{"master-1:node.tar"}, reason: "registry.k8s.io/pause:3.10.2 is missing"},
		{name: "digest-differs", master: with(nil), node: with(func(m map[string]string) {
			m["registry.k8s.io/kube-proxy:v1.37.2"] = "sha256:" + strings.Repeat("f", 64)
		}),
			want: []string{"compute-1:node.tar"}, reason: "registry.k8s.io/kube-proxy:v1.37.2 is sha256:ffff"},
	} {
		t.Run(c.name, func(t *testing.T) {
			facts := plan.FreshFacts(hostNames(inv))
			facts.ImageArchives = archives
			for host, images := range map[string]map[string]string{"master-1": c.master, "compute-1": c.node} {
				if images == nil {
					facts.Hosts[host].ImagesUnknown = "ctr not found"
				}
				facts.Hosts[host].Images = images
			}
			pl, err := Plan(inv, facts, st, PlanOptions{Parallel: 4})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			var first plan.Step
			for i, stage := range pl.Stages {
				for _, s := range stage.Steps {
					if s.Op != plan.OpImportImages {
						continue
					}
					if stage.Kind != plan.StageImages || pl.Stages[i+1].Kind != plan.StageControlPlaneInit && pl.Stages[i+1].Kind != plan.StageNodesJoin && pl.Stages[i+1].Kind != plan.StageKubeconfig {
						t.Errorf("import in stage %s before %s, want the images stage right before kubeadm", stage.Kind, pl.Stages[i+1].Kind)
					}
					if len(got) == 0 {
						first = s
					}
					got = append(got, s.Host+":"+filepath.Base(s.Source))
					if s.Path != plan.ImageImportPath(s.SHA256) || len(s.Images) == 0 {
						t.Errorf("step %+v", s)
					}
				}
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("imports %v, want %v", got, c.want)
			}
			if c.reason != "" && !strings.Contains(first.Reason, c.reason) {
				t.Errorf("reason %q, want %q in it", first.Reason, c.reason)
			}
		})
	}

	facts := plan.FreshFacts(hostNames(inv))
	if _, err := Plan(inv, facts, st, PlanOptions{}); err == nil || !strings.Contains(err.Error(), "was not read before planning") {
		t.Errorf("planning without the archives read: %v", err)
	}
}
