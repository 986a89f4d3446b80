package provision

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"strings"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
)

// What an OCI image layout holds (image-spec image-layout.md).
const (
	ociIndexFile  = "index.json"
	ociLayoutFile = "oci-layout"
	// maxIndexJSON bounds index.json: a few hundred bytes per image, so
	// 1 MiB is thousands of images; a larger one is not an image archive
	// kprov should trust with its memory.
	maxIndexJSON = 1 << 20
	// maxArchiveEntries bounds the tar headers read: an image has a config,
	// a manifest and its layers.
	maxArchiveEntries = 100000
)

// The annotations that name an image in an index: containerd's full
// reference first, then the OCI one (which the contract also sets to the
// full reference; a bare tag is refused, see imageRef).
const (
	annotationContainerdName = "io.containerd.image.name"
	annotationOCIRefName     = "org.opencontainers.image.ref.name"
)

var digestPattern = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// ReadImageArchives reads every image archive of inv's artifacts block in
// the inventory's order (ReadImageArchive), and refuses two archives that
// give one reference different digests: which one a node ends up with would
// depend on the import order.
func ReadImageArchives(inv *inventory.Inventory) ([]plan.ImageArchive, error) {
	var out []plan.ImageArchive
	seen := map[string]struct{ digest, path string }{}
	for _, a := range inv.Images {
		ar, err := ReadImageArchive(a.Path, a.SHA256)
		if err != nil {
			return nil, err
		}
		for _, r := range ar.Images {
			if prev, ok := seen[r.Ref]; ok && prev.digest != r.Digest {
				return nil, fmt.Errorf("image archives %s and %s both hold %s, with digests %s and %s: keep one of them in the inventory's artifacts", prev.path, a.Path, r.Ref, prev.digest, r.Digest)
			}
			seen[r.Ref] = struct{ digest, path string }{r.Digest, a.Path}
		}
		out = append(out, ar)
	}
	return out, nil
}

// ReadImageArchive reads one image archive on the operator's machine: it
// checks the file's SHA-256 against the inventory's first (a mismatch is
// refused, naming the file, as for every artifact), then reads index.json
// from the tar and returns each image's reference and manifest digest. It
// reads index.json into memory (at most maxIndexJSON bytes) and only the
// headers of every other entry, to check that each manifest's blob is there.
func ReadImageArchive(file, wantSHA256 string) (plan.ImageArchive, error) {
	ar := plan.ImageArchive{Path: file, SHA256: wantSHA256}
	f, err := os.Open(file)
	if err != nil {
		return ar, fmt.Errorf("image archive: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ar, fmt.Errorf("image archive %s: %w", file, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != wantSHA256 {
		return ar, fmt.Errorf("image archive %s has sha256 %s, but the inventory says %s: refusing to use it (rebuild or re-download the file, or fix the inventory)", file, got, wantSHA256)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return ar, fmt.Errorf("image archive %s: %w", file, err)
	}
	images, err := readOCILayout(f)
	if err != nil {
		return ar, fmt.Errorf("image archive %s: %w (want an OCI image-layout tar: oci-layout, index.json, blobs/sha256/...)", file, err)
	}
	ar.Images = images
	return ar, nil
}

// ociIndex is the part of an OCI image index kprov reads.
type ociIndex struct {
	SchemaVersion int `json:"schemaVersion"`
	Manifests     []struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Annotations map[string]string `json:"annotations"`
	} `json:"manifests"`
}

// readOCILayout reads an OCI image-layout tar's index.json and checks that
// the layout marker and every named manifest's blob are in the archive.
func readOCILayout(r io.Reader) ([]plan.ImageRef, error) {
	tr := tar.NewReader(r)
	var index []byte
	layout := false
	blobs := map[string]bool{}
	for n := 0; ; n++ {
		if n >= maxArchiveEntries {
			return nil, fmt.Errorf("more than %d entries", maxArchiveEntries)
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")
		switch {
		case name == ociLayoutFile:
			layout = true
		case name == ociIndexFile:
			if hdr.Typeflag != tar.TypeReg {
				return nil, errors.New("index.json is not a regular file")
			}
			if hdr.Size > maxIndexJSON {
				return nil, fmt.Errorf("index.json is %d bytes, more than the %d kprov reads", hdr.Size, maxIndexJSON)
			}
			if index, err = io.ReadAll(io.LimitReader(tr, maxIndexJSON)); err != nil {
				return nil, fmt.Errorf("index.json: %w", err)
			}
		case strings.HasPrefix(name, "blobs/sha256/") && hdr.Typeflag == tar.TypeReg:
			blobs["sha256:"+strings.TrimPrefix(name, "blobs/sha256/")] = true
		}
	}
	if !layout {
		return nil, errors.New("no oci-layout file")
	}
	if index == nil {
		return nil, errors.New("no index.json")
	}
	var idx ociIndex
	if err := json.Unmarshal(index, &idx); err != nil {
		return nil, fmt.Errorf("index.json: %w", err)
	}
	if idx.SchemaVersion != 2 {
		return nil, fmt.Errorf("index.json: schemaVersion %d, want 2", idx.SchemaVersion)
	}
	if len(idx.Manifests) == 0 {
		return nil, errors.New("index.json names no image")
	}
	var out []plan.ImageRef
	refs := map[string]bool{}
	for i, m := range idx.Manifests {
		if !digestPattern.MatchString(m.Digest) {
			return nil, fmt.Errorf("index.json: manifest %d: digest %q, want sha256:<64 hex digits>", i, m.Digest)
		}
		if !blobs[m.Digest] {
			return nil, fmt.Errorf("index.json: manifest %d: blob %s is not in the archive", i, m.Digest)
		}
		ref, err := imageRef(m.Annotations)
		if err != nil {
			return nil, fmt.Errorf("index.json: manifest %d (%s): %w", i, m.Digest, err)
		}
		if refs[ref] {
			return nil, fmt.Errorf("index.json: %s is named twice", ref)
		}
		refs[ref] = true
		out = append(out, plan.ImageRef{Ref: ref, Digest: m.Digest})
	}
	return out, nil
}

// imageRef is the full reference a manifest's annotations give it:
// containerd's name, else the OCI ref name. containerd names an imported
// image after these; a bare tag ("v1.37.2", which the OCI annotation allows)
// would become a name no kubelet asks for, so it is refused.
func imageRef(ann map[string]string) (string, error) {
	ref := ann[annotationContainerdName]
	if ref == "" {
		ref = ann[annotationOCIRefName]
	}
	if ref == "" {
		return "", fmt.Errorf("no %s or %s annotation names the image", annotationContainerdName, annotationOCIRefName)
	}
	if !fullReference(ref) {
		return "", fmt.Errorf("%q is not a full image reference (REGISTRY/NAME:TAG)", ref)
	}
	return ref, nil
}

// fullReference reports whether ref has a registry host, a repository and
// a tag or digest, the form kubeadm and the kubelet use
// (registry.k8s.io/pause:3.10.2), with nothing a shell or ctr's output
// columns would split.
func fullReference(ref string) bool {
	if strings.ContainsAny(ref, " \t\n\r\x00'\"\\$`") {
		return false
	}
	host, rest, ok := strings.Cut(ref, "/")
	if !ok || host == "" || !strings.ContainsAny(host, ".:") && host != "localhost" {
		return false
	}
	name, digest, hasDigest := strings.Cut(rest, "@")
	if hasDigest {
		return name != "" && digestPattern.MatchString(digest)
	}
	last := rest[strings.LastIndex(rest, "/")+1:]
	repo, tag, ok := strings.Cut(last, ":")
	return ok && repo != "" && tag != ""
}
