package provision

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/ssh"
	"github.com/kprov/kprov/templates"
)

// LoadClusterReadOnly is LoadCluster for commands that only look: it reads
// the state directory as it is (pki.Load) and creates or reissues nothing,
// so kprov certs shows the certificates an apply left, not ones it would
// issue.
func LoadClusterReadOnly(inv *inventory.Inventory) (*Cluster, error) {
	set, err := templates.Load(inv.Cluster.TemplatesDir)
	if err != nil {
		return nil, err
	}
	st, err := pki.Load(inv.Cluster.StateDir)
	if err != nil {
		return nil, fmt.Errorf("state directory %s: %w (run kprov apply first)", inv.Cluster.StateDir, err)
	}
	return &Cluster{Inventory: inv, Templates: set, State: st}, nil
}

// CertInfo is what a certificate says, as kprov certs shows it.
type CertInfo struct {
	Subject  string    `json:"subject"`
	Issuer   string    `json:"issuer"`
	Serial   string    `json:"serial"`             // hex
	SHA256   string    `json:"sha256_fingerprint"` // of the DER certificate
	NotAfter time.Time `json:"not_after"`
	DaysLeft int       `json:"days_left"` // whole days from now; negative once expired
}

// certInfo describes c as seen at now.
func certInfo(c *x509.Certificate, now time.Time) *CertInfo {
	sum := sha256.Sum256(c.Raw)
	return &CertInfo{
		Subject: c.Subject.String(), Issuer: c.Issuer.String(), Serial: c.SerialNumber.Text(16),
		SHA256: hex.EncodeToString(sum[:]), NotAfter: c.NotAfter.UTC(), DaysLeft: int(c.NotAfter.Sub(now).Hours() / 24),
	}
}

// StateCert is one certificate in the state directory.
type StateCert struct {
	Path string `json:"path"` // relative to the state directory
	Kind string `json:"kind"` // "CA", or a pki.Leaf kind
	CertInfo
}

// What HostCert.State says about a host's copy of a certificate.
const (
	CertMatches    = "matches"    // the host holds kprov's certificate (and its key, when it has one)
	CertDiffers    = "differs"    // the host holds another certificate or key than the state directory's
	CertMissing    = "missing"    // kprov puts it there, and it is not there
	CertUnreadable = "unreadable" // there but not readable or not a certificate
	CertExpired    = "expired"    // the host's copy has expired
	CertKubeadm    = "kubeadm"    // issued by kubeadm on the master (listed with its expiry, not compared)
)

// HostCert is one certificate file on a host.
type HostCert struct {
	Path  string    `json:"path"`
	State string    `json:"state"`
	Host  *CertInfo `json:"host,omitempty"`  // what the host holds
	Kprov *CertInfo `json:"kprov,omitempty"` // the state directory's copy; nil for kubeadm's
	// Problem says what is wrong and what to do; "" when nothing is.
	Problem string `json:"problem,omitempty"`
}

// HostCerts is every certificate file kprov put on a host, and on a
// master kubeadm's control-plane certificates.
type HostCerts struct {
	Host      string     `json:"host"`
	Reachable bool       `json:"reachable"`
	Error     string     `json:"error,omitempty"`
	Certs     []HostCert `json:"certs,omitempty"`
}

// CertsReport is what kprov certs shows.
type CertsReport struct {
	State []StateCert `json:"state"`
	Hosts []HostCerts `json:"hosts"`
	// Problems name each host's certificate that differs from kprov's, is
	// expired or unreadable, and each unreachable host.
	Problems []string `json:"problems,omitempty"`
	// Failed is true when a certificate on a reachable host differs, is
	// missing, expired or unreadable, or one in the state directory has
	// expired: kprov certs then exits 1. An unreachable host alone does
	// not set it.
	Failed bool `json:"failed"`
}

// certsMaxOutput bounds one host's listing: a few dozen base64 certificates.
const certsMaxOutput = 1 << 20

// kubeadmPKIDirs are where kubeadm keeps a master's certificates.
var kubeadmPKIDirs = []string{pki.RemotePKIDir, pki.RemotePKIDir + "/etcd"}

// Certs lists the state directory's certificates and reads every host's
// copies over SSH (hosts in parallel within p.Parallel), read-only. A host
// that cannot be reached is reported and the others still listed.
func (p *Pipeline) Certs(ctx context.Context) (*CertsReport, error) {
	c := p.Cluster
	st := c.State
	now := p.now()
	rep := &CertsReport{}
	for _, ca := range []struct {
		path string
		pair *pki.Pair
	}{{"pki/ca.crt", st.CA}, {"pki/front-proxy-ca.crt", st.FrontProxyCA}, {"pki/etcd/ca.crt", st.EtcdCA}} {
		rep.State = append(rep.State, StateCert{Path: ca.path, Kind: "CA", CertInfo: *certInfo(ca.pair.Cert, now)})
	}
	for _, l := range st.EtcdLeaves() {
		rep.State = append(rep.State, StateCert{Path: l.Base + ".crt", Kind: l.Kind, CertInfo: *certInfo(l.Pair.Cert, now)})
	}
	for _, s := range rep.State {
		if s.DaysLeft < 0 || now.After(s.NotAfter) {
			rep.Failed = true
			rep.Problems = append(rep.Problems, fmt.Sprintf("state directory: %s expired on %s: run kprov certs renew --all", s.Path, s.NotAfter.Format(time.DateOnly)))
		}
	}

	inv := c.Inventory
	names := make([]string, len(inv.Hosts))
	wants := map[string][]pki.File{}
	for i, h := range inv.Hosts {
		names[i] = h.Name
		var err error
		if wants[h.Name], err = st.FilesFor(h.Name, h.Roles...); err != nil {
			return nil, err
		}
	}
	results, _ := ssh.ForEach(ctx, names, p.Parallel, func(ctx context.Context, name string) (map[string]hostCertFile, error) {
		h := inv.Host(name)
		var dirs []string
		if h.Has(inventory.RoleMaster) {
			dirs = kubeadmPKIDirs
		}
		ex, err := p.Conn.Connect(ctx, h)
		if err != nil {
			return nil, err
		}
		script, err := scriptReadCerts(wants[name], dirs)
		if err != nil {
			return nil, err
		}
		res, err := ex.Run(ctx, ssh.Command{Cmd: "sh -s", Stdin: strings.NewReader(script), MaxOutput: certsMaxOutput})
		if err != nil {
			return nil, fmt.Errorf("read certificates: %w", err)
		}
		if res.Truncated {
			return nil, fmt.Errorf("read certificates: output over %d bytes", certsMaxOutput)
		}
		return parseCertListing(res.Stdout)
	})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, r := range results {
		hc := HostCerts{Host: r.Host, Reachable: r.Err == nil}
		if r.Err != nil {
			hc.Error = withoutHost(r.Host, r.Err)
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s is unreachable (%s): its certificates are not listed; bring it back and run kprov certs again", r.Host, hc.Error))
			rep.Hosts = append(rep.Hosts, hc)
			continue
		}
		hc.Certs = compareHostCerts(wants[r.Host], r.Value, now)
		for _, cf := range hc.Certs {
			if cf.Problem != "" {
				rep.Failed = true
				rep.Problems = append(rep.Problems, r.Host+": "+cf.Path+": "+cf.Problem)
			}
		}
		rep.Hosts = append(rep.Hosts, hc)
	}
	return rep, nil
}

// hostCertFile is one line of a host's listing: a certificate's bytes, a
// key's checksum, or why neither could be read.
type hostCertFile struct {
	kind    string // "crt", "key" or "kubeadm"
	status  string // "ok", "absent", "unreadable"
	content []byte // a certificate's PEM
	sha256  string // a key's checksum
}

// parseCertListing reads scriptReadCerts' output: "crt PATH ok BASE64",
// "key PATH ok SHA256", "kubeadm PATH ok BASE64", or "KIND PATH absent|unreadable",
// and a last line "end=ok" so a listing cut short is an error.
func parseCertListing(out []byte) (map[string]hostCertFile, error) {
	files := map[string]hostCertFile{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), certsMaxOutput)
	ended := false
	for sc.Scan() {
		line := sc.Text()
		if line == "end=ok" {
			ended = true
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 {
			return nil, fmt.Errorf("read certificates: unexpected line %q", line)
		}
		hf := hostCertFile{kind: f[0], status: f[2]}
		if hf.status == "ok" {
			if len(f) != 4 {
				return nil, fmt.Errorf("read certificates: unexpected line for %s", f[1])
			}
			if hf.kind == "key" {
				hf.sha256 = f[3]
			} else {
				b, err := base64.StdEncoding.DecodeString(f[3])
				if err != nil {
					return nil, fmt.Errorf("read certificates: %s: %w", f[1], err)
				}
				hf.content = b
			}
		}
		files[f[1]] = hf
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read certificates: %w", err)
	}
	if !ended {
		return nil, fmt.Errorf("read certificates: the listing ended early")
	}
	return files, nil
}

// compareHostCerts judges each certificate kprov puts on the host against
// what the host holds (and its key by checksum), then lists kubeadm's.
func compareHostCerts(want []pki.File, have map[string]hostCertFile, now time.Time) []HostCert {
	var out []HostCert
	keys := map[string]pki.File{}
	for _, f := range want {
		if f.Secret {
			keys[f.Path] = f
		}
	}
	for _, f := range want {
		if !strings.HasSuffix(f.Path, ".crt") {
			continue
		}
		hc := HostCert{Path: f.Path}
		if c, err := pki.ParseCertificatePEM(f.Content); err == nil {
			hc.Kprov = certInfo(c, now)
		}
		h, key := have[f.Path], have[strings.TrimSuffix(f.Path, ".crt")+".key"]
		wantKey, hasKey := keys[strings.TrimSuffix(f.Path, ".crt")+".key"]
		switch h.status {
		case "absent", "":
			hc.State, hc.Problem = CertMissing, "kprov's certificate is not on the host: run kprov apply to put it there"
		case "unreadable":
			hc.State, hc.Problem = CertUnreadable, "cannot be read: check the file and its permissions on the host, then run kprov apply"
		default:
			c, err := pki.ParseCertificatePEM(h.content)
			if err != nil {
				hc.State, hc.Problem = CertUnreadable, "not a certificate ("+err.Error()+"): run kprov apply to put kprov's back"
				break
			}
			hc.Host = certInfo(c, now)
			switch {
			case now.After(c.NotAfter):
				hc.State, hc.Problem = CertExpired, "expired on "+c.NotAfter.UTC().Format(time.DateOnly)+": run kprov certs renew --all (or kprov apply when kprov's copy is newer)"
			case !bytes.Equal(h.content, f.Content):
				hc.State, hc.Problem = CertDiffers, "the host holds another certificate than the state directory's: run kprov apply to roll out kprov's (a running etcd member's one member at a time)"
			case hasKey && key.sha256 != wantKey.SHA256():
				hc.State, hc.Problem = CertDiffers, "the host's key is not the state directory's: run kprov apply to roll out kprov's"
			default:
				hc.State = CertMatches
			}
		}
		out = append(out, hc)
	}
	var kubeadm []string
	for path, h := range have {
		if h.kind == "kubeadm" && !slices.ContainsFunc(want, func(f pki.File) bool { return f.Path == path }) {
			kubeadm = append(kubeadm, path)
		}
	}
	slices.Sort(kubeadm)
	for _, path := range kubeadm {
		hc := HostCert{Path: path, State: CertKubeadm}
		c, err := pki.ParseCertificatePEM(have[path].content)
		switch {
		case have[path].status != "ok" || err != nil:
			hc.State, hc.Problem = CertUnreadable, "kubeadm's certificate cannot be read: check it on the master (kubeadm certs check-expiration)"
		case now.After(c.NotAfter):
			hc.Host = certInfo(c, now)
			hc.State, hc.Problem = CertExpired, "kubeadm's certificate expired on "+c.NotAfter.UTC().Format(time.DateOnly)+": run kubeadm certs renew on the master (kprov's renewal of kubeadm's certificates is issue 16)"
		default:
			hc.Host = certInfo(c, now)
		}
		out = append(out, hc)
	}
	return out
}

// scriptReadCerts prints, read-only, each certificate kprov put on the
// host (base64, one line), the SHA-256 of each key (never the key), and on
// a master every other certificate in kubeadm's directories.
func scriptReadCerts(files []pki.File, kubeadmDirs []string) (string, error) {
	var b strings.Builder
	b.WriteString(`# kprov certs: read-only
export LC_ALL=C
crt() { if [ ! -e "$2" ]; then echo "$1 $2 absent"; elif [ -r "$2" ] && c=$(base64 < "$2" | tr -d '\n'); then echo "$1 $2 ok $c"; else echo "$1 $2 unreadable"; fi; }
key() { if [ ! -e "$1" ]; then echo "key $1 absent"; elif s=$(sha256sum < "$1" 2>/dev/null); then echo "key $1 ok ${s%% *}"; else echo "key $1 unreadable"; fi; }
`)
	for _, f := range files {
		if strings.ContainsAny(f.Path, " \n\x00") || !filepath.IsAbs(f.Path) {
			return "", fmt.Errorf("file %q: want an absolute path without spaces", f.Path)
		}
		switch {
		case strings.HasSuffix(f.Path, ".crt"):
			fmt.Fprintf(&b, "crt crt %s\n", shellQuote(f.Path))
		case strings.HasSuffix(f.Path, ".key"):
			fmt.Fprintf(&b, "key %s\n", shellQuote(f.Path))
		}
	}
	for _, d := range kubeadmDirs {
		fmt.Fprintf(&b, "for f in %s/*.crt; do if [ -f \"$f\" ]; then crt kubeadm \"$f\"; fi; done\n", shellQuote(d))
	}
	b.WriteString("echo end=ok\n")
	return b.String(), nil
}
