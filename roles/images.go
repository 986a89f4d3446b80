package roles

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
)

// KubeadmRegistry is where kubeadm's images come from by default; kprov
// never changes kubeadm's imageRepository, so the archives must carry
// exactly these names.
const KubeadmRegistry = "registry.k8s.io"

// kubeadmImageTags are the image versions compiled into kubeadm for one
// minor release (cmd/kubeadm/app/constants): the kube-* images follow the
// Kubernetes version itself. TestKubeadmImagesMatchKubeadm checks a minor
// against `kubeadm config images list` of a real kubeadm.
type kubeadmImageTags struct {
	Pause   string
	CoreDNS string
	Etcd    string // kubeadm's default for stacked etcd; kprov overrides it (EtcdImageTag)
}

// kubeadmImagesByMinor is the table of what each Kubernetes minor's
// kubeadm asks for. Add a minor here (and run the test against its
// kubeadm) to bring images for it.
var kubeadmImagesByMinor = map[int]kubeadmImageTags{
	37: {Pause: "3.10.2", CoreDNS: "v1.14.6", Etcd: "3.7.0-0"},
}

// EtcdImageTag is the tag of the etcd image for etcd version v: kubeadm's
// own tags carry a "-0" build suffix, and kprov sets etcd.local.imageTag to
// it so stacked etcd runs the inventory's etcd version, not kubeadm's default.
func EtcdImageTag(etcdVersion string) string { return etcdVersion + "-0" }

// KubeadmImages lists the images `kubeadm config images list
// --kubernetes-version v<version>` prints, in its order, with the etcd
// image tagged etcdTag ("" for external etcd, which kubeadm does not run).
// It fails for a minor the table does not know.
func KubeadmImages(version, etcdTag string) ([]string, error) {
	tags, err := imageTags(version)
	if err != nil {
		return nil, err
	}
	r := KubeadmRegistry + "/"
	out := []string{
		r + "kube-apiserver:v" + version,
		r + "kube-controller-manager:v" + version,
		r + "kube-scheduler:v" + version,
		r + "kube-proxy:v" + version,
		r + "coredns/coredns:" + tags.CoreDNS,
		r + "pause:" + tags.Pause,
	}
	if etcdTag != "" {
		out = append(out, r+"etcd:"+etcdTag)
	}
	return out, nil
}

// SandboxImage is the pause image kubeadm's version expects. containerd's
// CRI plugin runs every pod sandbox from its own configured image (its
// default may be another pause tag): the runtime's configuration must name
// this one, or containerd tries to pull its default on a node that pulls
// nothing.
func SandboxImage(version string) (string, error) {
	tags, err := imageTags(version)
	if err != nil {
		return "", err
	}
	return KubeadmRegistry + "/pause:" + tags.Pause, nil
}

func imageTags(version string) (kubeadmImageTags, error) {
	parts := strings.SplitN(version, ".", 3)
	minor := -1
	if len(parts) == 3 && parts[0] == "1" {
		minor, _ = strconv.Atoi(parts[1])
	}
	tags, ok := kubeadmImagesByMinor[minor]
	if !ok {
		var known []string
		for _, m := range slices.Sorted(maps.Keys(kubeadmImagesByMinor)) {
			known = append(known, fmt.Sprintf("1.%d", m))
		}
		return tags, fmt.Errorf("kprov does not know which images kubeadm %s needs (it knows %s)", version, strings.Join(known, ", "))
	}
	return tags, nil
}

// NodeImages lists the images host h needs before kubeadm runs there, in
// kubeadm's order: on every node the pause (sandbox) image, kube-proxy (a
// DaemonSet) and CoreDNS (its pods may land on any node); on a master
// also the control-plane images and, with stacked etcd, etcd at the
// inventory's version. Nil for a host that is no Kubernetes node.
func NodeImages(inv *inventory.Inventory, h *inventory.Host) ([]string, error) {
	if !h.IsNode() {
		return nil, nil
	}
	etcdTag := ""
	if inv.Topology.EtcdMode == inventory.EtcdStacked {
		etcdTag = EtcdImageTag(etcdVersion(inv))
	}
	all, err := KubeadmImages(inv.Cluster.KubernetesVersion, etcdTag)
	if err != nil || h.Has(inventory.RoleMaster) {
		return all, err
	}
	controlPlane := []string{"kube-apiserver:", "kube-controller-manager:", "kube-scheduler:", "etcd:"}
	return slices.DeleteFunc(all, func(ref string) bool {
		return slices.ContainsFunc(controlPlane, func(p string) bool { return strings.HasPrefix(ref, KubeadmRegistry+"/"+p) })
	}), nil
}

// etcdVersion is the inventory's etcd version, or kprov's default.
func etcdVersion(inv *inventory.Inventory) string {
	if inv.Etcd.Version != "" {
		return inv.Etcd.Version
	}
	return inventory.DefaultEtcdVersion
}

// imageArchives pairs each of the inventory's image archives with what was
// read from it before planning (facts), in the inventory's order.
func (p *planner) imageArchives() ([]plan.ImageArchive, error) {
	var out []plan.ImageArchive
	for _, a := range p.inv.Images {
		i := slices.IndexFunc(p.facts.ImageArchives, func(ar plan.ImageArchive) bool { return ar.Path == a.Path && ar.SHA256 == a.SHA256 })
		if i < 0 {
			return nil, fmt.Errorf("image archive %s (sha256 %s) was not read before planning", a.Path, a.SHA256)
		}
		out = append(out, p.facts.ImageArchives[i])
	}
	return out, nil
}

// images imports, on every Kubernetes node, each archive that holds an
// image the node needs and its containerd lacks, by reference and digest (a
// reference with another digest is another build, imported again): a node
// that has them all gets nothing, so a second apply uploads nothing. A node
// needs the kubeadm images of its role (NodeImages: a worker no
// control-plane image) and every image that is not kubeadm's (the
// operator's own), so an archive of control-plane images never reaches a
// worker. The stage runs after the etcd stages, which need no image, and
// before kubeadm, which pulls nothing (imagePullPolicy Never) and finds
// every image in place. Nodes are independent here, so it runs in parallel
// within the bound.
func (p *planner) images() (plan.Stage, error) {
	stage := plan.Stage{Kind: plan.StageImages, Title: "importing container images", Parallel: p.opts.Parallel}
	archives, err := p.imageArchives()
	if err != nil || len(archives) == 0 {
		return stage, err
	}
	// Any tag of the etcd image counts as kubeadm's: only a stacked
	// master needs one, at the inventory's version.
	kubeadmAll, _ := KubeadmImages(p.inv.Cluster.KubernetesVersion, "")
	isKubeadm := func(ref string) bool {
		return slices.Contains(kubeadmAll, ref) || strings.HasPrefix(ref, KubeadmRegistry+"/etcd:")
	}
	for _, hfiles := range p.final.Hosts {
		if hfiles.Node == nil {
			continue
		}
		hf := p.host(hfiles.Name)
		needed, err := NodeImages(p.inv, p.inv.Host(hfiles.Name))
		needs := func(r plan.ImageRef) bool { return err != nil || slices.Contains(needed, r.Ref) || !isKubeadm(r.Ref) }
		for _, ar := range archives {
			missing := slices.DeleteFunc(hf.MissingImages(ar.Images), func(r plan.ImageRef) bool { return !needs(r) })
			if len(missing) == 0 {
				continue
			}
			stage.Steps = append(stage.Steps, plan.Step{Op: plan.OpImportImages, Host: hfiles.Name, Path: plan.ImageImportPath(ar.SHA256),
				SHA256: ar.SHA256, Source: ar.Path, Images: ar.Images, Reason: importReason(hf, missing)})
		}
	}
	return stage, nil
}

// importReason says which images the node lacks and how.
func importReason(hf *plan.HostFacts, missing []plan.ImageRef) string {
	if hf.ImagesUnknown != "" {
		return "containerd's images are unknown (" + hf.ImagesUnknown + "); import every archive"
	}
	var parts []string
	for _, r := range missing {
		if d, ok := hf.Images[r.Ref]; ok {
			parts = append(parts, fmt.Sprintf("%s is %s on the host, the archive's is %s", r.Ref, d, r.Digest))
		} else {
			parts = append(parts, r.Ref+" is missing")
		}
	}
	return "containerd lacks images of the archive: " + strings.Join(parts, "; ")
}
