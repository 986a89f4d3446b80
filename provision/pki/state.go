// Package pki creates and keeps kprov's cluster PKI and join secrets in the
// operator's state directory: the Kubernetes CA, the front-proxy CA, the
// service-account key pair, the etcd CA with every certificate an external
// etcd cluster needs, the bootstrap token and the certificate key.
//
// kprov owns these on the operator side instead of letting kubeadm create
// them on the first master, so every join configuration (with the discovery
// CA hash) can be rendered before any host is touched, and so a cluster
// rebuilt from backups keeps its CA. See docs/state.md for the layout.
package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// Names of the certificates kprov issues and of the groups in them, as kubeadm names them.
const (
	KubernetesCACommonName        = "kubernetes"
	FrontProxyCACommonName        = "front-proxy-ca"
	EtcdCACommonName              = "etcd-ca"
	EtcdHealthcheckClientCN       = "kube-etcd-healthcheck-client"
	APIServerEtcdClientCommonName = "kube-apiserver-etcd-client"
	MastersGroup                  = "system:masters"
)

// Files and directories inside the state directory; the PKI mirrors
// kubeadm's /etc/kubernetes/pki so an operator recognises every file.
const (
	pkiDir      = "pki"
	membersDir  = "pki/etcd/members" // one directory per external etcd member: server and peer pairs
	secretsFile = "secrets.json"
	saKeyFile   = "pki/sa.key"
	saPubFile   = "pki/sa.pub"
)

// Member is an external etcd host as the inventory describes it.
type Member struct {
	Name    string // host name: the certificate's common name and a DNS name in it
	Address string // IP address (or DNS name) etcd listens and advertises on
}

// Request is what the PKI must cover, taken from the inventory.
type Request struct {
	// EtcdMembers are the external etcd hosts; empty for stacked etcd, where
	// kubeadm issues the etcd leaves on each master from kprov's etcd CA.
	EtcdMembers []Member
}

// External reports whether the request is for an external etcd cluster.
func (r Request) External() bool { return len(r.EtcdMembers) > 0 }

// memberName is what a member name may look like; it becomes a directory name in the state directory.
var memberName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func (r Request) validate() error {
	seen := map[string]bool{}
	for _, m := range r.EtcdMembers {
		if !memberName.MatchString(m.Name) {
			return fmt.Errorf("etcd member %q: name must be letters, digits, '.', '_' or '-'", m.Name)
		}
		if seen[m.Name] {
			return fmt.Errorf("etcd member %q: listed twice", m.Name)
		}
		seen[m.Name] = true
		if m.Address == "" {
			return fmt.Errorf("etcd member %q: no address", m.Name)
		}
	}
	return nil
}

// EtcdMemberCerts are the certificates of one external etcd member.
type EtcdMemberCerts struct {
	Server *Pair // client-facing TLS (port 2379)
	Peer   *Pair // member-to-member TLS (port 2380)
}

// ServiceAccountKey is the key pair the API server signs service-account tokens with.
type ServiceAccountKey struct {
	PublicPEM []byte // sa.pub, PKIX "PUBLIC KEY"
	keyPEM    []byte
}

// State is the cluster's PKI and secrets as kept in the state directory.
type State struct {
	Dir            string             // the state directory
	CA             *Pair              // Kubernetes CA: /etc/kubernetes/pki/ca.{crt,key}
	FrontProxyCA   *Pair              // front-proxy CA
	EtcdCA         *Pair              // etcd CA, also for stacked etcd so a rebuilt cluster keeps it
	ServiceAccount *ServiceAccountKey // sa.key and sa.pub

	// Only for external etcd (nil or empty for stacked).
	EtcdHealthcheckClient *Pair                       // etcd/healthcheck-client, also kprov's own etcd client
	APIServerEtcdClient   *Pair                       // apiserver-etcd-client on every master
	EtcdMembers           map[string]*EtcdMemberCerts // by member name

	Secrets Secrets // bootstrap token and certificate key
}

// External reports whether the state holds the certificates of an external etcd cluster.
func (s *State) External() bool { return s.APIServerEtcdClient != nil }

// DiscoveryHash is the discovery-token-ca-cert-hash of the cluster CA for kubeadm join configurations.
func (s *State) DiscoveryHash() string { return DiscoveryHash(s.CA.Cert) }

// Change records a file Ensure created or replaced, for the caller to log.
type Change struct {
	Path   string // relative to the state directory; a certificate's key was replaced with it
	Reason string // why, e.g. "new" or "names changed from ... to ..."
}

// String formats a change for a log line.
func (c Change) String() string { return c.Path + ": " + c.Reason }

// Load reads the state directory without changing it. It fails when the
// directory is incomplete (run Ensure first) or unsafe. Unlike Ensure it
// returns every etcd member found, whether or not the inventory still has it.
func Load(dir string) (*State, error) {
	l := &loader{dir: dir}
	if err := checkDir(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, l.missing("")
	} else if err != nil {
		return nil, err
	}
	s := &State{Dir: dir}
	var err error
	for _, ca := range []struct {
		dst  **Pair
		base string
	}{{&s.CA, "pki/ca"}, {&s.FrontProxyCA, "pki/front-proxy-ca"}, {&s.EtcdCA, "pki/etcd/ca"}} {
		if *ca.dst, err = l.requireCA(ca.base); err != nil {
			return nil, err
		}
	}
	if s.ServiceAccount, err = l.serviceAccount(); err != nil {
		return nil, err
	}
	if s.ServiceAccount == nil {
		return nil, l.missing(saKeyFile)
	}
	if s.Secrets, err = readSecrets(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, l.missing(secretsFile)
	} else if err != nil {
		return nil, err
	}
	if s.EtcdHealthcheckClient, err = loadPair(dir, "pki/etcd/healthcheck-client"); err != nil {
		return nil, err
	}
	if s.APIServerEtcdClient, err = loadPair(dir, "pki/apiserver-etcd-client"); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(dir, membersDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	s.EtcdMembers = map[string]*EtcdMemberCerts{}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		m := &EtcdMemberCerts{}
		base := membersDir + "/" + e.Name()
		if m.Server, err = loadPair(dir, base+"/server"); err != nil {
			return nil, err
		}
		if m.Peer, err = loadPair(dir, base+"/peer"); err != nil {
			return nil, err
		}
		if m.Server == nil || m.Peer == nil {
			return nil, l.missing(base + "/server.crt and peer.crt")
		}
		s.EtcdMembers[e.Name()] = m
	}
	return s, nil
}

// Ensure makes the state directory cover req and returns it with what was
// created or replaced. It reuses every file that still serves, never
// replaces a CA or the service-account key (an incomplete or mismatched one
// is an error naming the file), and reissues a leaf whose names, subject or
// usages no longer match req, that is not signed by the current CA, or that
// expires within RenewBefore. Certificates of etcd members no longer in req
// stay on disk but are not in the returned State.
//
// now is the issuing time (tests pass a fixed one). Running two kprov
// processes on one state directory at once is not supported; the worst
// outcome is an error, never a replaced CA.
func Ensure(dir string, req Request, now time.Time) (*State, []Change, error) {
	if err := req.validate(); err != nil {
		return nil, nil, err
	}
	for _, d := range []string{dir, filepath.Join(dir, pkiDir), filepath.Join(dir, "pki/etcd")} {
		if err := ensureDir(d); err != nil {
			return nil, nil, err
		}
	}
	e := &ensurer{loader: loader{dir: dir}, now: now}
	s := &State{Dir: dir, EtcdMembers: map[string]*EtcdMemberCerts{}}
	var err error
	if s.CA, err = e.ca("pki/ca", KubernetesCACommonName); err != nil {
		return nil, nil, err
	}
	if s.FrontProxyCA, err = e.ca("pki/front-proxy-ca", FrontProxyCACommonName); err != nil {
		return nil, nil, err
	}
	if s.EtcdCA, err = e.ca("pki/etcd/ca", EtcdCACommonName); err != nil {
		return nil, nil, err
	}
	if s.ServiceAccount, err = e.serviceAccount(); err != nil {
		return nil, nil, err
	}
	if s.Secrets, err = e.secrets(); err != nil {
		return nil, nil, err
	}
	// kprov's own etcd client, for external and stacked etcd alike: it
	// checks each stacked member a master join adds, as it checks external ones.
	if s.EtcdHealthcheckClient, err = e.leaf("pki/etcd/healthcheck-client", s.EtcdCA, clientSpec(EtcdHealthcheckClientCN)); err != nil {
		return nil, nil, err
	}
	if !req.External() {
		return s, e.changes, nil
	}
	if s.APIServerEtcdClient, err = e.leaf("pki/apiserver-etcd-client", s.EtcdCA, clientSpec(APIServerEtcdClientCommonName)); err != nil {
		return nil, nil, err
	}
	for _, m := range req.EtcdMembers {
		base := membersDir + "/" + m.Name
		if err := ensureDir(filepath.Join(dir, base)); err != nil {
			return nil, nil, err
		}
		certs := &EtcdMemberCerts{}
		if certs.Server, err = e.leaf(base+"/server", s.EtcdCA, memberSpec(m)); err != nil {
			return nil, nil, err
		}
		if certs.Peer, err = e.leaf(base+"/peer", s.EtcdCA, memberSpec(m)); err != nil {
			return nil, nil, err
		}
		s.EtcdMembers[m.Name] = certs
	}
	return s, e.changes, nil
}

// clientSpec is an etcd client certificate as kubeadm issues it (O=system:masters, client auth only).
func clientSpec(commonName string) certSpec {
	return certSpec{
		commonName:   commonName,
		organization: []string{MastersGroup},
		usages:       []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		algorithm:    ecdsaP256,
	}
}

// memberSpec is an etcd member's server or peer certificate with kubeadm's
// names. Both carry ServerAuth and ClientAuth: etcd uses the server
// certificate as a client too (etcd-io/etcd#9785), and peers dial each other.
func memberSpec(m Member) certSpec {
	spec := certSpec{
		commonName: m.Name,
		dnsNames:   []string{m.Name, "localhost"},
		ips:        []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback},
		usages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		algorithm:  ecdsaP256,
	}
	if ip := net.ParseIP(m.Address); ip != nil {
		spec.ips = append([]net.IP{ip}, spec.ips...)
	} else {
		spec.dnsNames = append(spec.dnsNames, m.Address)
	}
	return spec
}

// loader reads files of one state directory.
type loader struct{ dir string }

// path turns a name relative to the state directory into a path.
func (l *loader) path(rel string) string { return filepath.Join(l.dir, rel) }

// missing is the error for a file Load needs and does not find.
func (l *loader) missing(rel string) error {
	return fmt.Errorf("%s: %w: the state directory is incomplete; let kprov create it, or restore it from your backup",
		l.path(rel), fs.ErrNotExist)
}

// loadPair reads base.crt and base.key; (nil, nil) when neither exists.
func loadPair(dir, base string) (*Pair, error) {
	certPath, keyPath := filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")
	haveCert, haveKey := exists(certPath), exists(keyPath)
	switch {
	case !haveCert && !haveKey:
		return nil, nil
	case !haveKey:
		return nil, &pairError{path: certPath, err: fmt.Errorf("%s does not exist", keyPath)}
	case !haveCert:
		return nil, &pairError{path: keyPath, err: fmt.Errorf("%s does not exist", certPath)}
	}
	certPEM, err := readFile(certPath, false)
	if err != nil {
		return nil, err
	}
	cert, err := parseCert(certPEM)
	if err != nil {
		return nil, &pairError{path: certPath, err: err}
	}
	keyPEM, err := readFile(keyPath, true)
	if err != nil {
		return nil, err
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, &pairError{path: keyPath, err: err}
	}
	if !keyMatches(cert, key) {
		return nil, &pairError{path: keyPath, err: fmt.Errorf("%w %s", errMismatch, certPath)}
	}
	return &Pair{Cert: cert, CertPEM: certPEM, key: key, keyPEM: keyPEM}, nil
}

// errMismatch is a private key that is not the certificate's.
var errMismatch = errors.New("key does not match")

// pairError is a certificate or key that is missing its other half, does
// not parse, or does not match: a leaf with one is reissued, a CA with one is fatal.
type pairError struct {
	path string
	err  error
}

func (e *pairError) Error() string { return e.path + ": " + e.err.Error() }
func (e *pairError) Unwrap() error { return e.err }

// ErrCAUnusable is wrapped by errors about a CA (or the service-account key) that exists but cannot be used; kprov never replaces one.
var ErrCAUnusable = errors.New("kprov never replaces an existing CA or service-account key")

// loadCA reads a CA pair; (nil, nil) when neither file exists.
func (l *loader) loadCA(base string, now time.Time) (*Pair, error) {
	p, err := loadPair(l.dir, base)
	var pe *pairError
	if errors.As(err, &pe) {
		return nil, fmt.Errorf("%w: %w: restore both %s.crt and %s.key from your backup of the state directory or from /etc/kubernetes/pki on a master; move them away only to start a new cluster",
			err, ErrCAUnusable, base, base)
	}
	if err != nil || p == nil {
		return p, err
	}
	if !p.Cert.IsCA {
		return nil, fmt.Errorf("%s: not a CA certificate (%w): restore the CA from your backup", l.path(base+".crt"), ErrCAUnusable)
	}
	if !now.IsZero() && now.After(p.Cert.NotAfter) {
		return nil, fmt.Errorf("%s: CA expired on %s (%w): rotating a CA is a manual procedure (kubeadm's manual CA rotation)",
			l.path(base+".crt"), p.Cert.NotAfter.Format(time.DateOnly), ErrCAUnusable)
	}
	return p, nil
}

// requireCA reads a CA that must exist.
func (l *loader) requireCA(base string) (*Pair, error) {
	p, err := l.loadCA(base, time.Time{})
	if err == nil && p == nil {
		err = l.missing(base + ".crt")
	}
	return p, err
}

// serviceAccount reads sa.key and sa.pub; (nil, nil) when neither exists.
// sa.pub is derived from sa.key, so only sa.key is authoritative.
func (l *loader) serviceAccount() (*ServiceAccountKey, error) {
	keyPath, pubPath := l.path(saKeyFile), l.path(saPubFile)
	if !exists(keyPath) {
		if exists(pubPath) {
			return nil, fmt.Errorf("%s: %s does not exist (%w): a new key would invalidate every service-account token; restore sa.key from your backup or from /etc/kubernetes/pki on a master",
				pubPath, keyPath, ErrCAUnusable)
		}
		return nil, nil
	}
	keyPEM, err := readFile(keyPath, true)
	if err != nil {
		return nil, err
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	pubPEM, err := encodePublicKey(key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	return &ServiceAccountKey{PublicPEM: pubPEM, keyPEM: keyPEM}, nil
}

// ensurer creates what a state directory lacks and records each change.
type ensurer struct {
	loader
	now     time.Time
	changes []Change
}

func (e *ensurer) record(rel, reason string) {
	e.changes = append(e.changes, Change{Path: rel, Reason: reason})
}

// ca returns the CA at base, creating it only when neither file exists.
func (e *ensurer) ca(base, commonName string) (*Pair, error) {
	p, err := e.loadCA(base, e.now)
	if err != nil || p != nil {
		return p, err
	}
	if p, err = newCA(commonName, e.now); err != nil {
		return nil, fmt.Errorf("%s: create CA: %w", e.path(base+".crt"), err)
	}
	// Key first: a crash in between leaves a key without a certificate,
	// which the next run reports instead of silently creating a second CA.
	if err := writeFile(e.path(base+".key"), p.keyPEM, keyMode, false); err != nil {
		return nil, err
	}
	if err := writeFile(e.path(base+".crt"), p.CertPEM, publicMode, false); err != nil {
		return nil, err
	}
	e.record(base+".crt", "new CA "+commonName)
	return p, nil
}

// leaf returns the pair at base, reissuing it from ca when it is missing or stale.
func (e *ensurer) leaf(base string, ca *Pair, spec certSpec) (*Pair, error) {
	p, err := loadPair(e.dir, base)
	var pe *pairError
	reason := "new"
	switch {
	case errors.As(err, &pe):
		reason = pe.err.Error()
	case err != nil:
		return nil, err
	case p != nil:
		if reason = staleReason(p, ca, spec, e.now); reason == "" {
			return p, nil
		}
	}
	if p, err = ca.sign(spec, e.now); err != nil {
		return nil, fmt.Errorf("%s: issue certificate: %w", e.path(base+".crt"), err)
	}
	// Nothing is lost: the pair replaced goes to the history first.
	kept, err := keepInHistory(e.dir, base, e.now)
	if err != nil {
		return nil, err
	}
	reason += kept
	// Key first, so a crash leaves a mismatched pair that the next run reissues.
	if err := writeFile(e.path(base+".key"), p.keyPEM, keyMode, true); err != nil {
		return nil, err
	}
	if err := writeFile(e.path(base+".crt"), p.CertPEM, publicMode, true); err != nil {
		return nil, err
	}
	e.record(base+".crt", reason)
	return p, nil
}

// serviceAccount returns the service-account key pair, creating it only when neither file exists.
func (e *ensurer) serviceAccount() (*ServiceAccountKey, error) {
	sa, err := e.loader.serviceAccount()
	if err != nil {
		return nil, err
	}
	if sa == nil {
		key, err := newKey(rsa2048)
		if err != nil {
			return nil, fmt.Errorf("%s: create key: %w", e.path(saKeyFile), err)
		}
		keyPEM, err := encodeKey(key)
		if err != nil {
			return nil, err
		}
		pubPEM, err := encodePublicKey(key)
		if err != nil {
			return nil, err
		}
		if err := writeFile(e.path(saKeyFile), keyPEM, keyMode, false); err != nil {
			return nil, err
		}
		e.record(saKeyFile, "new service-account key")
		sa = &ServiceAccountKey{PublicPEM: pubPEM, keyPEM: keyPEM}
	}
	// sa.pub is derived from sa.key: rewrite it when it is missing or differs.
	if have, err := readFile(e.path(saPubFile), false); err != nil || string(have) != string(sa.PublicPEM) {
		if err := writeFile(e.path(saPubFile), sa.PublicPEM, publicMode, true); err != nil {
			return nil, err
		}
		e.record(saPubFile, "derived from sa.key")
	}
	return sa, nil
}
