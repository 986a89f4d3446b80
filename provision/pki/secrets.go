package pki

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"regexp"
	"time"
)

// Lifetimes kubeadm gives the join secrets by default.
const (
	BootstrapTokenTTL = 24 * time.Hour // kubeadm's default bootstrap token ttl
	CertificateKeyTTL = 2 * time.Hour  // the kubeadm-certs Secret is deleted this long after upload
)

// bootstrapTokenFormat is kubeadm's token syntax: a public 6-character ID and a 16-character secret.
var bootstrapTokenFormat = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)

// certificateKeyFormat is kubeadm's certificate key: 32 bytes (an AES-256 key) in hex.
var certificateKeyFormat = regexp.MustCompile(`^[a-f0-9]{64}$`)

// Secrets are the join secrets kprov generates and keeps in the state directory.
type Secrets struct {
	BootstrapToken        Secret    // "abcdef.0123456789abcdef"; nodes join with it
	BootstrapTokenCreated time.Time // when kprov generated the token
	CertificateKey        Secret    // 64 hex characters; encrypts the certificates kubeadm uploads for control-plane joins
	CertificateKeyCreated time.Time // when kprov generated the key
}

// BootstrapTokenID returns the token's public ID (the part before the dot), which names its Secret in kube-system and may be logged.
func (s Secrets) BootstrapTokenID() string {
	if len(s.BootstrapToken) < 6 {
		return ""
	}
	return string(s.BootstrapToken[:6])
}

// TokenExpired reports whether a token created when recorded has outlived
// BootstrapTokenTTL at now. The cluster's copy may live longer (its TTL
// starts when it is created there), so this errs on the side of renewing;
// pass now plus the expected run time to renew one that would expire mid-run.
func (s Secrets) TokenExpired(now time.Time) bool {
	return !now.Before(s.BootstrapTokenCreated.Add(BootstrapTokenTTL))
}

// CertificateKeyExpired reports whether certificates uploaded with the key
// when it was created would have been deleted by now, so the apply must
// upload them again (kubeadm init phase upload-certs) with a renewed key.
func (s Secrets) CertificateKeyExpired(now time.Time) bool {
	return !now.Before(s.CertificateKeyCreated.Add(CertificateKeyTTL))
}

// secretsOnDisk is the JSON form of Secrets; the values are plain strings
// here because Secret refuses to marshal its value.
type secretsOnDisk struct {
	BootstrapToken        string    `json:"bootstrapToken"`
	BootstrapTokenCreated time.Time `json:"bootstrapTokenCreated"`
	CertificateKey        string    `json:"certificateKey"`
	CertificateKeyCreated time.Time `json:"certificateKeyCreated"`
}

// newBootstrapToken draws a token uniformly from kubeadm's alphabet with crypto/rand.
func newBootstrapToken() Secret {
	const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
	out := make([]byte, 0, 23)
	buf := make([]byte, 64)
	for len(out) < 22 {
		rand.Read(buf)
		for _, b := range buf {
			// Reject the top 4 values of a byte so each character is equally likely (252 = 7*36).
			if b < 252 && len(out) < 22 {
				out = append(out, alphabet[b%36])
			}
		}
	}
	return Secret(string(out[:6]) + "." + string(out[6:]))
}

// newCertificateKey returns 32 random bytes in hex, as kubeadm certs certificate-key does.
func newCertificateKey() Secret {
	b := make([]byte, 32)
	rand.Read(b)
	return Secret(hex.EncodeToString(b))
}

// readSecrets reads secrets.json; the error wraps fs.ErrNotExist when it is missing.
// No error ever quotes a value from the file.
func readSecrets(dir string) (Secrets, error) {
	path := filepath.Join(dir, secretsFile)
	data, err := readFile(path, true)
	if err != nil {
		return Secrets{}, err
	}
	var d secretsOnDisk
	if err := json.Unmarshal(data, &d); err != nil {
		// json's syntax errors quote no input, but its type errors name fields only; neither carries a value.
		return Secrets{}, fmt.Errorf("%s: %w: restore it from your backup, or delete it to generate new join secrets", path, err)
	}
	if !bootstrapTokenFormat.MatchString(d.BootstrapToken) {
		return Secrets{}, fmt.Errorf("%s: bootstrapToken is not of the form [a-z0-9]{6}.[a-z0-9]{16}: delete the file to generate new join secrets", path)
	}
	if !certificateKeyFormat.MatchString(d.CertificateKey) {
		return Secrets{}, fmt.Errorf("%s: certificateKey is not 64 lowercase hex characters: delete the file to generate new join secrets", path)
	}
	return Secrets{
		BootstrapToken:        Secret(d.BootstrapToken),
		BootstrapTokenCreated: d.BootstrapTokenCreated,
		CertificateKey:        Secret(d.CertificateKey),
		CertificateKeyCreated: d.CertificateKeyCreated,
	}, nil
}

// writeSecrets replaces secrets.json atomically with mode 0600.
func writeSecrets(dir string, s Secrets) error {
	data, err := json.MarshalIndent(secretsOnDisk{
		BootstrapToken:        s.BootstrapToken.Reveal(),
		BootstrapTokenCreated: s.BootstrapTokenCreated.UTC(),
		CertificateKey:        s.CertificateKey.Reveal(),
		CertificateKeyCreated: s.CertificateKeyCreated.UTC(),
	}, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, secretsFile), append(data, '\n'), keyMode, true)
}

// secrets returns the stored secrets, generating them on the first run.
// Expired ones are kept: whether they must be renewed depends on the live
// cluster, which only the apply can see (see RenewBootstrapToken).
func (e *ensurer) secrets() (Secrets, error) {
	s, err := readSecrets(e.dir)
	if !errors.Is(err, fs.ErrNotExist) {
		return s, err
	}
	s = Secrets{
		BootstrapToken:        newBootstrapToken(),
		BootstrapTokenCreated: e.now,
		CertificateKey:        newCertificateKey(),
		CertificateKeyCreated: e.now,
	}
	if err := writeSecrets(e.dir, s); err != nil {
		return Secrets{}, err
	}
	e.record(secretsFile, "new bootstrap token and certificate key")
	return s, nil
}

// RenewBootstrapToken replaces the stored bootstrap token with a new one
// created at now; the apply calls it when Secrets.TokenExpired and then
// creates the token on the cluster (kubeadm token create).
func RenewBootstrapToken(dir string, now time.Time) (Secrets, error) {
	return renewSecrets(dir, func(s *Secrets) {
		s.BootstrapToken, s.BootstrapTokenCreated = newBootstrapToken(), now
	})
}

// RenewCertificateKey replaces the stored certificate key with a new one
// created at now; the apply calls it when Secrets.CertificateKeyExpired and
// then uploads the certificates again with it.
func RenewCertificateKey(dir string, now time.Time) (Secrets, error) {
	return renewSecrets(dir, func(s *Secrets) {
		s.CertificateKey, s.CertificateKeyCreated = newCertificateKey(), now
	})
}

func renewSecrets(dir string, change func(*Secrets)) (Secrets, error) {
	if err := checkDir(dir); err != nil {
		return Secrets{}, err
	}
	s, err := readSecrets(dir)
	if err != nil {
		return Secrets{}, err
	}
	change(&s)
	if err := writeSecrets(dir, s); err != nil {
		return Secrets{}, err
	}
	return s, nil
}
