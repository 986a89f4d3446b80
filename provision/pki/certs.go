package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strings"
	"time"
)

// Validity periods and the renewal window, matching kubeadm's defaults.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour // kubeadm's CA lifetime
	LeafValidity = 365 * 24 * time.Hour      // kubeadm's leaf lifetime
	RenewBefore  = 30 * 24 * time.Hour       // leaves closer than this to expiry are reissued

	// backdate lets hosts whose clocks run a few minutes behind the
	// operator's accept a certificate issued just now (kubeadm backdates too).
	backdate = 5 * time.Minute
)

// keyAlgorithm is the kind of private key a certificate gets.
type keyAlgorithm int

const (
	// rsa2048 is kubeadm's default encryptionAlgorithm; CAs and the
	// service-account key use it so the cluster looks exactly like one
	// kubeadm built itself, and every kubeadm and apiserver version accepts it.
	rsa2048 keyAlgorithm = iota
	// ecdsaP256 is used for the etcd leaves kprov issues itself: etcd accepts
	// it, and it is much cheaper to generate and to handshake with.
	ecdsaP256
)

// Pair is a certificate with its private key, parsed and as the PEM bytes kept on disk and pushed to hosts.
type Pair struct {
	Cert    *x509.Certificate // parsed certificate
	CertPEM []byte            // the certificate file's bytes
	key     crypto.Signer
	keyPEM  []byte
}

// TLSCertificate returns the pair for a crypto/tls client or server (kprov's own etcd client uses the healthcheck pair).
func (p *Pair) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{p.Cert.Raw}, PrivateKey: p.key, Leaf: p.Cert}
}

// certSpec is what a certificate must say; a leaf that no longer says it is reissued.
type certSpec struct {
	commonName   string
	organization []string
	dnsNames     []string
	ips          []net.IP
	usages       []x509.ExtKeyUsage
	algorithm    keyAlgorithm
}

// newKey generates a private key. Since Go 1.26 key generation always uses
// the system's secure random source, so there is no io.Reader to pass.
func newKey(alg keyAlgorithm) (crypto.Signer, error) {
	switch alg {
	case ecdsaP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return rsa.GenerateKey(rand.Reader, 2048)
	}
}

// encodeKey writes a key in the PEM form kubeadm itself writes: PKCS#1 for RSA, SEC 1 for ECDSA.
func encodeKey(key crypto.Signer) ([]byte, error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), nil
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
	default:
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
}

// parseKey reads a PEM private key in PKCS#1, SEC 1 or PKCS#8 form, so keys restored from a kubeadm host or converted by openssl are accepted.
func parseKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM private key found")
	}
	var key any
	var err error
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
	return signer, nil
}

// parseCert reads the first PEM certificate in data.
func parseCert(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate found")
	}
	return x509.ParseCertificate(block.Bytes)
}

// keyMatches reports whether key is the private half of cert's public key.
func keyMatches(cert *x509.Certificate, key crypto.Signer) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}

// serialNumber is random, as RFC 5280 advises, so two certificates kprov issues never share one.
func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	return n.Add(n, big.NewInt(1)), nil
}

// newCA creates a self-signed CA the way kubeadm does (CN also as DNS name, key usages, 10 years).
func newCA(commonName string, now time.Time) (*Pair, error) {
	key, err := newKey(rsa2048)
	if err != nil {
		return nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		DNSNames:              []string{commonName},
		NotBefore:             now.Add(-backdate).UTC(),
		NotAfter:              now.Add(CAValidity).UTC(),
		KeyUsage:              x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	return issue(tmpl, tmpl, key, key)
}

// sign issues a leaf certificate for spec with a fresh key. It never
// outlives its CA: a longer NotAfter would only be refused by verifiers.
func (ca *Pair) sign(spec certSpec, now time.Time) (*Pair, error) {
	key, err := newKey(spec.algorithm)
	if err != nil {
		return nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(LeafValidity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	usage := x509.KeyUsageDigitalSignature
	if _, ok := key.(*rsa.PrivateKey); ok {
		// Key encipherment only means something for RSA key transport.
		usage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: spec.commonName, Organization: spec.organization},
		DNSNames:     spec.dnsNames,
		IPAddresses:  spec.ips,
		NotBefore:    now.Add(-backdate).UTC(),
		NotAfter:     notAfter.UTC(),
		KeyUsage:     usage,
		ExtKeyUsage:  spec.usages,
	}
	return issue(tmpl, ca.Cert, key, ca.key)
}

// issue signs tmpl with parentKey and returns the parsed result with its PEM encodings.
func issue(tmpl, parent *x509.Certificate, key, parentKey crypto.Signer) (*Pair, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &Pair{
		Cert:    cert,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:     key,
		keyPEM:  keyPEM,
	}, nil
}

// staleReason says why a leaf must be reissued, or "" when it still serves.
func staleReason(p *Pair, ca *Pair, spec certSpec, now time.Time) string {
	c := p.Cert
	if err := c.CheckSignatureFrom(ca.Cert); err != nil {
		return "not signed by the current " + ca.Cert.Subject.CommonName
	}
	if c.Subject.CommonName != spec.commonName || !slices.Equal(c.Subject.Organization, spec.organization) {
		return fmt.Sprintf("subject changed to CN=%s O=%v", spec.commonName, spec.organization)
	}
	if have, want := sanList(c.DNSNames, c.IPAddresses), sanList(spec.dnsNames, spec.ips); !slices.Equal(have, want) {
		return fmt.Sprintf("names changed from %s to %s", strings.Join(have, ","), strings.Join(want, ","))
	}
	if !slices.Equal(c.ExtKeyUsage, spec.usages) {
		return "extended key usages changed"
	}
	// A leaf already capped at its CA's expiry cannot be renewed by reissuing, so it is not reissued on every run.
	if now.Add(RenewBefore).After(c.NotAfter) && c.NotAfter.Before(ca.Cert.NotAfter) {
		return "expires " + c.NotAfter.Format(time.RFC3339)
	}
	return ""
}

// sanList is the sorted set of subject alternative names, for comparing what a certificate says with what it should.
func sanList(dns []string, ips []net.IP) []string {
	out := make([]string, 0, len(dns)+len(ips))
	for _, d := range dns {
		out = append(out, "DNS:"+strings.ToLower(d))
	}
	for _, ip := range ips {
		out = append(out, "IP:"+ip.String())
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// DiscoveryHash is kubeadm's discovery-token-ca-cert-hash of a CA:
// "sha256:" and the hex SHA-256 of the DER SubjectPublicKeyInfo. It pins
// the CA's key, not the certificate, so it survives a re-signed CA.
func DiscoveryHash(ca *x509.Certificate) string {
	sum := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// encodePublicKey writes key's public half as a PKIX "PUBLIC KEY" PEM block, the form of kubeadm's sa.pub.
func encodePublicKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}
