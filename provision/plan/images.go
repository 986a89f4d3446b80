package plan

import "slices"

// ImageRef is one container image: its full reference
// (registry.k8s.io/kube-apiserver:v1.37.2) and the digest of the manifest
// (or index) it names. Two images are the same only when both agree: a
// reference alone says nothing of which build a host holds.
type ImageRef struct {
	Ref    string `json:"ref"`
	Digest string `json:"digest"`
}

// String is "REF@DIGEST".
func (r ImageRef) String() string { return r.Ref + "@" + r.Digest }

// ImageArchive is one of the inventory's image archives (an OCI image-layout
// tar) on the operator's machine, as kprov read it before planning: its
// path, its SHA-256 (checked against the inventory) and the images its
// index.json names, in index order.
type ImageArchive struct {
	Path   string     `json:"path"`
	SHA256 string     `json:"sha256"`
	Images []ImageRef `json:"images"`
}

// ImagesK8sNamespace is the containerd namespace the kubelet's CRI plugin
// reads images from; an image anywhere else is invisible to Kubernetes.
const ImagesK8sNamespace = "k8s.io"

// ImageImportDir is where an image archive is uploaded for its import
// (0700, root's); the import removes the archive in every case.
const ImageImportDir = "/var/lib/kprov/images"

// ImageImportPath is the name an archive with this SHA-256 is uploaded to.
func ImageImportPath(sha256 string) string { return ImageImportDir + "/" + sha256 + ".tar" }

// HasImage reports whether the host's containerd lists the image under its
// reference with the same digest. Unknown images (no ctr, containerd not
// running) count as absent.
func (hf *HostFacts) HasImage(r ImageRef) bool {
	d, ok := hf.Images[r.Ref]
	return ok && d == r.Digest
}

// MissingImages lists the images of want the host lacks (by reference and
// digest), in want's order.
func (hf *HostFacts) MissingImages(want []ImageRef) []ImageRef {
	return slices.DeleteFunc(slices.Clone(want), hf.HasImage)
}
