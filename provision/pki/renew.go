package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// HistoryDir is where the state directory keeps the certificates and keys
// a renewal replaced, one directory per renewal named by its UTC time, so a
// renewal never loses a file (docs/certs.md).
const HistoryDir = "pki-history"

// Leaf kinds, as kprov certs shows them.
const (
	LeafEtcdServer = "etcd server" // a member's client-facing certificate (port 2379)
	LeafEtcdPeer   = "etcd peer"   // a member's certificate towards its peers (port 2380)
	LeafEtcdClient = "etcd client" // a client of etcd: kprov's healthcheck client, the API server's
)

// Leaf is one etcd certificate kprov issued from its etcd CA and can renew.
type Leaf struct {
	Base   string // relative to the state directory, without .crt/.key: pki/etcd/members/etcd-1/server
	Kind   string // LeafEtcdServer, LeafEtcdPeer or LeafEtcdClient
	Member string // the member a server or peer certificate belongs to; "" for a client
	Pair   *Pair
}

// EtcdLeaves lists the etcd leaves in s that kprov issued and renews: the
// healthcheck client, and with external etcd the API server's client
// certificate and every member's server and peer pair, sorted by Base.
func (s *State) EtcdLeaves() []Leaf {
	var out []Leaf
	if s.EtcdHealthcheckClient != nil {
		out = append(out, Leaf{Base: "pki/etcd/healthcheck-client", Kind: LeafEtcdClient, Pair: s.EtcdHealthcheckClient})
	}
	if s.APIServerEtcdClient != nil {
		out = append(out, Leaf{Base: "pki/apiserver-etcd-client", Kind: LeafEtcdClient, Pair: s.APIServerEtcdClient})
	}
	for _, name := range slices.Sorted(maps.Keys(s.EtcdMembers)) {
		m := s.EtcdMembers[name]
		base := membersDir + "/" + name
		out = append(out,
			Leaf{Base: base + "/peer", Kind: LeafEtcdPeer, Member: name, Pair: m.Peer},
			Leaf{Base: base + "/server", Kind: LeafEtcdServer, Member: name, Pair: m.Server})
	}
	slices.SortFunc(out, func(a, b Leaf) int { return strings.Compare(a.Base, b.Base) })
	return out
}

// Renewal is a set of reissued etcd leaves not yet written to the state
// directory: the plan made with them is shown and confirmed first, so a
// declined renewal changes nothing.
type Renewal struct {
	dir    string
	leaves []Leaf // the new pairs; the old ones are read from disk when saved
}

// Leaves are the reissued certificates, sorted by Base.
func (r *Renewal) Leaves() []Leaf { return slices.Clone(r.leaves) }

// Empty reports whether nothing was reissued.
func (r *Renewal) Empty() bool { return r == nil || len(r.leaves) == 0 }

// ReissueEtcdLeaves returns a copy of s in which the leaves named by their
// Base are reissued from s's etcd CA with new keys, and the Renewal that
// writes them. The CA is never touched (CA rotation is out of kprov's
// scope). Every new member certificate is checked before it is returned
// (VerifyMemberCert): a certificate its peers would reject never reaches
// a plan. req gives each member's address; a member not in req cannot be
// renewed (its host left the inventory).
func (s *State) ReissueEtcdLeaves(req Request, bases []string, now time.Time) (*State, *Renewal, error) {
	members := map[string]Member{}
	for _, m := range req.EtcdMembers {
		members[m.Name] = m
	}
	out := *s
	out.EtcdMembers = map[string]*EtcdMemberCerts{}
	for name, m := range s.EtcdMembers {
		c := *m
		out.EtcdMembers[name] = &c
	}
	r := &Renewal{dir: s.Dir}
	known := map[string]Leaf{}
	for _, l := range s.EtcdLeaves() {
		known[l.Base] = l
	}
	for _, base := range slices.Compact(slices.Sorted(slices.Values(bases))) {
		l, ok := known[base]
		if !ok {
			return nil, nil, fmt.Errorf("%s: not an etcd certificate kprov issued", filepath.Join(s.Dir, base+".crt"))
		}
		var spec certSpec
		switch l.Kind {
		case LeafEtcdClient:
			spec = clientSpec(l.Pair.Cert.Subject.CommonName)
		default:
			m, ok := members[l.Member]
			if !ok {
				return nil, nil, fmt.Errorf("%s: etcd member %s is not in the inventory: kprov renews only the certificates of the inventory's members", filepath.Join(s.Dir, base+".crt"), l.Member)
			}
			spec = memberSpec(m)
		}
		p, err := s.EtcdCA.sign(spec, now)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: issue certificate: %w", filepath.Join(s.Dir, base+".crt"), err)
		}
		if l.Kind != LeafEtcdClient {
			if err := VerifyMemberCert(s.EtcdCA.Cert, p.CertPEM, members[l.Member].Name, members[l.Member].Address, now); err != nil {
				return nil, nil, fmt.Errorf("%s: the new certificate would be refused: %w", filepath.Join(s.Dir, base+".crt"), err)
			}
		}
		switch {
		case l.Base == "pki/etcd/healthcheck-client":
			out.EtcdHealthcheckClient = p
		case l.Base == "pki/apiserver-etcd-client":
			out.APIServerEtcdClient = p
		case l.Kind == LeafEtcdServer:
			out.EtcdMembers[l.Member].Server = p
		case l.Kind == LeafEtcdPeer:
			out.EtcdMembers[l.Member].Peer = p
		}
		l.Pair = p
		r.leaves = append(r.leaves, l)
	}
	return &out, r, nil
}

// Save keeps the certificate and key each renewed leaf replaces under
// HistoryDir/<now, UTC>/ (same relative path, same modes), then writes the
// new ones, key first, each atomically. An interrupted Save leaves every
// old file in the history and each leaf either old, new, or with a
// mismatched pair that the next Ensure reissues.
func (r *Renewal) Save(now time.Time) ([]Change, error) {
	if r.Empty() {
		return nil, nil
	}
	var changes []Change
	for _, l := range r.leaves {
		kept, err := keepInHistory(r.dir, l.Base, now)
		if err != nil {
			return changes, err
		}
		if err := writeFile(filepath.Join(r.dir, l.Base+".key"), l.Pair.keyPEM, keyMode, true); err != nil {
			return changes, err
		}
		if err := writeFile(filepath.Join(r.dir, l.Base+".crt"), l.Pair.CertPEM, publicMode, true); err != nil {
			return changes, err
		}
		changes = append(changes, Change{Path: l.Base + ".crt", Reason: "renewed" + kept})
	}
	return changes, nil
}

// keepInHistory copies base.crt and base.key, where they exist, to
// HistoryDir/<now, UTC>/base.* with their modes, never replacing a file
// there, and returns " (the old one is kept under DIR)", or "" when there
// was nothing to keep.
func keepInHistory(dir, base string, now time.Time) (string, error) {
	stamp := filepath.Join(HistoryDir, now.UTC().Format("20060102T150405.000Z"))
	kept := false
	for _, f := range []struct {
		ext  string
		mode fs.FileMode
	}{{".crt", publicMode}, {".key", keyMode}} {
		src := filepath.Join(dir, base+f.ext)
		data, err := readFile(src, f.ext == ".key")
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		dst := filepath.Join(dir, stamp, base+f.ext)
		if err := ensureDir(filepath.Dir(dst)); err != nil {
			return "", err
		}
		if err := writeFile(dst, data, f.mode, false); err != nil {
			return "", fmt.Errorf("keep the old %s: %w", src, err)
		}
		kept = true
	}
	if !kept {
		return "", nil
	}
	return " (the old one is kept under " + stamp + ")", nil
}

// VerifyMemberCert checks that certPEM is a certificate an etcd member
// named name at address may serve to clients and present to peers: it
// chains to the etcd CA (the one every peer and client trusts), is valid
// at now, names the member (CN), covers the member's address (an IP or a
// DNS name) and carries both server and client authentication, which etcd
// needs since it dials its peers with the same certificate.
func VerifyMemberCert(ca *x509.Certificate, certPEM []byte, name, address string, now time.Time) error {
	c, err := parseCert(certPEM)
	if err != nil {
		return err
	}
	if c.Subject.CommonName != name {
		return fmt.Errorf("its subject is CN=%s, not the member's name %s", c.Subject.CommonName, name)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	host := address
	if ip := net.ParseIP(address); ip != nil {
		host = ip.String()
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: host, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return fmt.Errorf("not valid for %s at %s with the etcd CA %s: %w", name, address, ca.Subject.CommonName, err)
		}
	}
	return nil
}

// ParseCertificatePEM reads the first certificate of a PEM file, as a host holds one.
func ParseCertificatePEM(data []byte) (*x509.Certificate, error) { return parseCert(data) }
