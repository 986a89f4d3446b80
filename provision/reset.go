package provision

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/roles"
)

// ResetRequest is what the person running kprov reset chose.
type ResetRequest struct {
	// Hosts are the hosts to reset (--host); empty resets the whole cluster.
	Hosts []string
	// AutoApprove skips View.Confirm.
	AutoApprove bool
	// BreakLock and LockOwner as for Apply.
	BreakLock bool
	LockOwner string
}

// ResetResult is what a reset saw and did.
type ResetResult struct {
	Facts *plan.Facts
	// Plan is nil when refused before planning.
	Plan *plan.Plan
	// Report is nil when nothing ran (no changes, declined, refused).
	Report *Report
	// RemovedKubeconfig is the admin kubeconfig a whole-cluster reset
	// removed from the state directory ("" when there was none): it named
	// a cluster that is gone.
	RemovedKubeconfig string
}

// Changed reports whether the reset changed anything.
func (r *ResetResult) Changed() bool {
	return r.Plan != nil && !r.Plan.Empty() || r.RemovedKubeconfig != ""
}

// Reset takes hosts out of service and back to clean under the cluster
// lock: gather facts (with the files only reset looks at), plan
// (roles.PlanReset: refusals come from there), show the plan and confirm,
// carry it out. A whole-cluster reset then removes the admin kubeconfig
// from the state directory. The state directory's CAs and keys stay, so a
// later kprov apply founds the cluster again with the same CAs.
func (p *Pipeline) Reset(ctx context.Context, req ResetRequest) (res *ResetResult, err error) {
	res = &ResetResult{}
	inv := p.Cluster.Inventory
	for _, name := range req.Hosts {
		if inv.Host(name) == nil {
			return res, fmt.Errorf("kprov reset --host %s: no host %q in inventory %s (hosts: %s)", name, name, inv.Path, strings.Join(hostNames(inv), ", "))
		}
	}
	in := roles.ResetInput{Hosts: slices.Compact(slices.Clone(req.Hosts))}
	if a, ok := inv.Artifact(inventory.CNIPluginsArtifact); ok {
		if in.CNIPlugins, err = ReadArchiveFiles(a.Path, a.SHA256); err != nil {
			return res, fmt.Errorf("artifacts: %s: %w", inventory.CNIPluginsArtifact, err)
		}
	}
	err = p.locked(ctx, ApplyRequest{BreakLock: req.BreakLock, LockOwner: req.LockOwner}, func(ctx context.Context) error {
		return p.resetLocked(ctx, req, in, res)
	})
	return res, err
}

func (p *Pipeline) resetLocked(ctx context.Context, req ResetRequest, in roles.ResetInput, res *ResetResult) error {
	facts, err := p.factsWith(ctx, roles.ResetFiles(p.Cluster.Inventory, in))
	if err != nil {
		return err
	}
	if facts.ImageArchives, err = ReadImageArchives(p.Cluster.Inventory); err != nil {
		return err
	}
	res.Facts = facts
	pl, err := roles.PlanReset(p.Cluster.Inventory, facts, p.Cluster.State, roles.PlanOptions{Parallel: p.Parallel, Templates: p.Cluster.Templates}, in)
	if err != nil {
		return err
	}
	res.Plan = pl
	if !pl.Empty() {
		rep, err := p.confirmAndApply(ctx, pl, facts, req.AutoApprove, "reset", nil)
		res.Report = rep
		if err != nil && rep != nil {
			return fmt.Errorf("%w; run kprov reset again to continue", err)
		} else if err != nil {
			return err
		}
	}
	if len(in.Hosts) == 0 && facts.KubeconfigFetched {
		kc := p.Cluster.KubeconfigPath()
		if err := os.Remove(kc); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("the hosts are reset; remove the admin kubeconfig of the cluster that is gone: %w", err)
		}
		res.RemovedKubeconfig = kc
	}
	return nil
}

func hostNames(inv *inventory.Inventory) []string {
	out := make([]string, len(inv.Hosts))
	for i, h := range inv.Hosts {
		out[i] = h.Name
	}
	return out
}

// maxArchiveFile bounds one file read from a cni-plugins archive.
const maxArchiveFile = 1 << 30

// ReadArchiveFiles lists the files kprov's unpacking of a .tgz artifact
// (scriptUnpackArchive) moves into place: the regular files at the
// archive's top level whose names do not start with a dot (the shell's *),
// with their SHA-256. The archive is checked against wantSHA256 first.
func ReadArchiveFiles(file, wantSHA256 string) ([]roles.ArchiveFile, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	whole := sha256.New()
	gz, err := gzip.NewReader(io.TeeReader(f, whole))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	var out []roles.ArchiveFile
	tr := tar.NewReader(gz)
	for n := 0; ; n++ {
		if n > maxArchiveEntries {
			return nil, fmt.Errorf("%s: more than %d entries", file, maxArchiveEntries)
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		name := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
		if hdr.Typeflag != tar.TypeReg || strings.Contains(name, "/") || strings.HasPrefix(name, ".") {
			continue
		}
		h := sha256.New()
		if _, err := io.Copy(h, io.LimitReader(tr, maxArchiveFile)); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", file, name, err)
		}
		out = append(out, roles.ArchiveFile{Name: name, SHA256: hex.EncodeToString(h.Sum(nil))})
	}
	// The rest of the file counts toward its checksum too.
	if _, err := io.Copy(io.Discard, f); err != nil {
		return nil, err
	}
	if got := hex.EncodeToString(whole.Sum(nil)); got != wantSHA256 {
		return nil, fmt.Errorf("%s has sha256 %s, but the inventory says %s", file, got, wantSHA256)
	}
	slices.SortFunc(out, func(a, b roles.ArchiveFile) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
