package provision

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"regexp"

	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/provision/ssh"
)

var sha256Hex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// importImages imports the step's archive unless the host's containerd
// already lists every image of it with its digest: a re-run, or a run
// after an interrupted one, uploads nothing. The archive goes to
// plan.ImageImportPath (the transport writes a temporary name exclusively,
// then renames), and the import script removes it in every case.
func (a *applier) importImages(ctx context.Context, ex ssh.Executor, s plan.Step) (bool, error) {
	// A plan edited by hand must never make this step write or remove a
	// file anywhere else.
	if !sha256Hex64.MatchString(s.SHA256) || s.Path != plan.ImageImportPath(s.SHA256) || s.Source == "" || len(s.Images) == 0 {
		return false, fmt.Errorf("refusing import-images to %q: want an archive with its sha256 and images, uploaded to %s", s.Path, plan.ImageImportPath("SHA256"))
	}
	res, err := a.run(ctx, ex, scriptListImages, a.opts.CommandTimeout)
	if err != nil {
		return false, fmt.Errorf("list containerd's images (is containerd running?): %w", err)
	}
	have, err := parseImageList(res.Stdout)
	if err != nil {
		return false, fmt.Errorf("list containerd's images: %w", err)
	}
	if len((&plan.HostFacts{Images: have}).MissingImages(s.Images)) == 0 {
		return false, nil
	}
	if _, err := a.run(ctx, ex, scriptMakeImageDir, a.opts.CommandTimeout); err != nil {
		return false, fmt.Errorf("create %s: %w", plan.ImageImportDir, err)
	}
	if _, err := a.upload(ctx, ex, plan.Step{Path: s.Path, Mode: 0o600, Source: s.Source, SHA256: s.SHA256}); err != nil {
		// The transport removes its temporary file; a complete one left
		// by an earlier interrupted run goes too.
		_, _ = a.run(context.WithoutCancel(ctx), ex, scriptRemoveFile(s.Path), a.opts.CommandTimeout)
		return false, err
	}
	// An import unpacks every layer: give it kubeadm's time, not a
	// systemctl command's.
	if _, err := a.run(ctx, ex, scriptImportImages(s.Path, s.SHA256, s.Images), a.opts.KubeadmTimeout); err != nil {
		return false, fmt.Errorf("import %s: %w", s.Source, err)
	}
	return true, nil
}

// parseImageList reads scriptListImages' output: reference to digest.
func parseImageList(out []byte) (map[string]string, error) {
	images := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		val, ok := bytes.CutPrefix([]byte(line), []byte("image="))
		if !ok {
			return nil, fmt.Errorf("unexpected line %q", line)
		}
		ref, digest, err := parseImageLine(string(val))
		if err != nil {
			return nil, err
		}
		images[ref] = digest
	}
	return images, sc.Err()
}
