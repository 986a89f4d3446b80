package lab

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/charmbracelet/log"
	"github.com/klauspost/compress/gzip"

	"github.com/kprov/kprov/internal/atomicfile"
)

// cniArchive is the CNI plugins archive's file name in the cache: a gzipped
// tar whose top level holds the plugin binaries, extracted into
// /opt/cni/bin on every Kubernetes node.
const cniArchive = "cni-plugins.tgz"

// cniPlugins are the plugins built, by package below
// github.com/containernetworking/plugins/plugins: the bridge, host-local
// and loopback a per-node bridge network needs, portmap for hostPort, and
// the few meta plugins common network configs chain.
var cniPlugins = []string{
	"ipam/host-local",
	"main/bridge",
	"main/loopback",
	"main/ptp",
	"meta/bandwidth",
	"meta/firewall",
	"meta/portmap",
	"meta/tuning",
}

// cniBuild builds the CNI plugins in one go build; the version appears in
// each plugin's `version` output as in the release build.
func cniBuild(version string) goBuild {
	b := goBuild{
		what:    "CNI plugins " + version,
		gets:    []string{"github.com/containernetworking/plugins@" + version},
		ldflags: "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=" + version,
	}
	for _, p := range cniPlugins {
		b.pkgs = append(b.pkgs, "github.com/containernetworking/plugins/plugins/"+p)
	}
	return b
}

// buildCNIPlugins builds the plugins into a temporary directory and packs
// them into outDir/cni-plugins.tgz.
func buildCNIPlugins(ctx context.Context, outDir, version string, logger *log.Logger) error {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return fmt.Errorf("CNI plugins: %w", err)
	}
	bin, err := os.MkdirTemp(outDir, ".plugins-")
	if err != nil {
		return fmt.Errorf("CNI plugins: %w", err)
	}
	defer os.RemoveAll(bin)
	if err := buildInModule(ctx, cniBuild(version), bin, logger); err != nil {
		return err
	}
	files := make([]string, len(cniPlugins))
	for i, p := range cniPlugins {
		files[i] = filepath.Join(bin, path.Base(p))
	}
	data, err := packCNIPlugins(files)
	if err != nil {
		return fmt.Errorf("CNI plugins: %w", err)
	}
	return atomicfile.Write(filepath.Join(outDir, cniArchive), data, 0o644)
}

// packCNIPlugins returns a gzipped tar of the files at its top level, in
// name order, mode 0755, owned by root, with fixed times: the same
// binaries always give the same bytes.
func packCNIPlugins(files []string) ([]byte, error) {
	sorted := slices.Clone(files)
	slices.SortFunc(sorted, func(a, b string) int {
		return strings.Compare(filepath.Base(a), filepath.Base(b))
	})
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.ModTime = epoch // this gzip writes a zero time.Time as a date in 2042
	tw := tar.NewWriter(zw)
	for _, f := range sorted {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		h := &tar.Header{
			Typeflag: tar.TypeReg, Name: filepath.Base(f), Mode: 0o755, Size: int64(len(data)),
			ModTime: epoch, Uname: "root", Gname: "root", Format: tar.FormatUSTAR,
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
