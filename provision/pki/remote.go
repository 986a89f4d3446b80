package pki

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"path"
	"slices"
	"strings"

	"github.com/kprov/kprov/inventory"
)

// RemotePKIDir is where kubeadm, the API server and kprov's etcd units read certificates on every host.
const RemotePKIDir = "/etc/kubernetes/pki"

// File is one PKI file to put on a host.
type File struct {
	Path    string      // absolute path on the host
	Mode    fs.FileMode // 0600 for keys, 0644 for certificates and public keys
	Content []byte      // the file's bytes; a key when Secret is set
	Secret  bool        // a private key: never print Content, and upload it 0600 from the first byte
}

// String describes the file without its content, which may be a private key.
func (f File) String() string {
	kind := "public"
	if f.Secret {
		kind = "secret"
	}
	return fmt.Sprintf("%s (%04o, %d bytes, %s)", f.Path, f.Mode.Perm(), len(f.Content), kind)
}

// Format prints String for every verb, so %v and %+v of a File or a []File never dump a key.
func (f File) Format(s fmt.State, _ rune) { _, _ = io.WriteString(s, f.String()) }

// LogValue logs the file's path, mode and checksum, never its content.
func (f File) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("path", f.Path),
		slog.String("mode", fmt.Sprintf("%04o", f.Mode.Perm())),
		slog.String("sha256", f.SHA256()),
		slog.Bool("secret", f.Secret),
	)
}

// MarshalJSON carries a certificate's content but only the checksum of a key, so a JSON plan may be shared.
func (f File) MarshalJSON() ([]byte, error) {
	out := struct {
		Path    string `json:"path"`
		Mode    string `json:"mode"`
		SHA256  string `json:"sha256"`
		Secret  bool   `json:"secret"`
		Content string `json:"content,omitempty"`
	}{Path: f.Path, Mode: fmt.Sprintf("%04o", f.Mode.Perm()), SHA256: f.SHA256(), Secret: f.Secret}
	if !f.Secret {
		out.Content = string(f.Content)
	}
	return json.Marshal(out)
}

// SHA256 is the hex checksum of the content; the apply compares it with the host's file before uploading.
func (f File) SHA256() string {
	sum := sha256.Sum256(f.Content)
	return hex.EncodeToString(sum[:])
}

// FilesFor returns the PKI files a host with the given roles needs, sorted by path:
//
//   - master: the Kubernetes and front-proxy CAs with their keys and the
//     service-account pair, so kubeadm issues every other control-plane
//     certificate from kprov's CAs. With stacked etcd also the etcd CA and
//     its key (kubeadm issues the etcd leaves on the host); with external
//     etcd the etcd CA certificate and apiserver-etcd-client.
//   - etcd (external only): the etcd CA certificate, this member's server
//     and peer pairs as etcd/server.* and etcd/peer.*, and the healthcheck
//     client. The etcd CA key never leaves the operator's machine.
//   - infra, compute: nothing.
func (s *State) FilesFor(host string, roles ...inventory.Role) ([]File, error) {
	var files []File
	add := func(rel string, content []byte, secret bool) {
		mode := publicMode
		if secret {
			mode = keyMode
		}
		files = append(files, File{Path: path.Join(RemotePKIDir, rel), Mode: mode, Content: content, Secret: secret})
	}
	addPair := func(rel string, p *Pair) {
		add(rel+".crt", p.CertPEM, false)
		add(rel+".key", p.keyPEM, true)
	}
	for _, r := range roles {
		switch r {
		case inventory.RoleMaster:
			addPair("ca", s.CA)
			addPair("front-proxy-ca", s.FrontProxyCA)
			add("sa.key", s.ServiceAccount.keyPEM, true)
			add("sa.pub", s.ServiceAccount.PublicPEM, false)
			if s.External() {
				add("etcd/ca.crt", s.EtcdCA.CertPEM, false)
				addPair("apiserver-etcd-client", s.APIServerEtcdClient)
			} else {
				addPair("etcd/ca", s.EtcdCA)
			}
		case inventory.RoleEtcd:
			m := s.EtcdMembers[host]
			if m == nil || s.EtcdHealthcheckClient == nil {
				return nil, fmt.Errorf("host %q: role etcd, but the PKI holds no etcd member certificates for it: list it among the external etcd members", host)
			}
			add("etcd/ca.crt", s.EtcdCA.CertPEM, false)
			addPair("etcd/server", m.Server)
			addPair("etcd/peer", m.Peer)
			addPair("etcd/healthcheck-client", s.EtcdHealthcheckClient)
		case inventory.RoleInfra, inventory.RoleCompute:
		default:
			return nil, fmt.Errorf("host %q: unknown role %q", host, r)
		}
	}
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	// A host with two roles needs some files twice (etcd/ca.crt); the content is the same.
	return slices.CompactFunc(files, func(a, b File) bool { return a.Path == b.Path }), nil
}
