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
//
// Each one's Created time starts its lifetime: kprov sets it when it
// generates the value and again when an apply gives the value to the
// cluster (kubeadm token create, or the certificates uploaded with the
// key), so the expiry checks err on the side of renewing. Pending marks a
// value renewed here but not yet given to the cluster: a plan made before an
// apply renews it in the state directory, so the join configurations it
// renders carry the new value, and the apply creates it on the cluster
// before anything joins.
type Secrets struct {
	BootstrapToken        Secret    // "abcdef.0123456789abcdef"; nodes join with it
	BootstrapTokenCreated time.Time // when kprov generated the token or last created it on the cluster
	BootstrapTokenPending bool      // renewed in the state directory, not yet created on the cluster
	CertificateKey        Secret    // 64 hex characters; encrypts the certificates kubeadm uploads for control-plane joins
	CertificateKeyCreated time.Time // when kprov generated the key or last uploaded the certificates with it
	CertificateKeyPending bool      // renewed in the state directory, no certificates uploaded with it yet
}

// BootstrapTokenID returns the token's public ID (the part before the dot), which names its Secret in kube-system and may be logged.
func (s Secrets) BootstrapTokenID() string {
	if len(s.BootstrapToken) < 6 {
		return ""
	}
	return string(s.BootstrapToken[:6])
}

// TokenExpired reports whether a token created when recorded has outlived
// BootstrapTokenTTL at now. The cluster's copy may live longer (kubeadm init
// starts its TTL, and init may come after kprov generated the token), so
// this errs on the side of renewing; pass now plus the expected run time to
// renew one that would expire mid-run.
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
	BootstrapTokenPending bool      `json:"bootstrapTokenPending,omitempty"`
	CertificateKey        string    `json:"certificateKey"`
	CertificateKeyCreated time.Time `json:"certificateKeyCreated"`
	CertificateKeyPending bool      `json:"certificateKeyPending,omitempty"`
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
		BootstrapTokenPending: d.BootstrapTokenPending,
		CertificateKey:        Secret(d.CertificateKey),
		CertificateKeyCreated: d.CertificateKeyCreated,
		CertificateKeyPending: d.CertificateKeyPending,
	}, nil
}

// writeSecrets replaces secrets.json atomically with mode 0600.
func writeSecrets(dir string, s Secrets) error {
	data, err := json.MarshalIndent(secretsOnDisk{
		BootstrapToken:        s.BootstrapToken.Reveal(),
		BootstrapTokenCreated: s.BootstrapTokenCreated.UTC(),
		BootstrapTokenPending: s.BootstrapTokenPending,
		CertificateKey:        s.CertificateKey.Reveal(),
		CertificateKeyCreated: s.CertificateKeyCreated.UTC(),
		CertificateKeyPending: s.CertificateKeyPending,
	}, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, secretsFile), append(data, '\n'), keyMode, true)
}

// secrets returns the stored secrets, generating them on the first run.
// Expired ones are kept: whether they must be renewed depends on whether
// anything is about to join the live cluster, which only the plan knows
// (see RenewBootstrapToken).
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
// generated at now and marks it pending. kprov calls it before planning when
// a node is about to join and the token has expired or will expire soon, so
// the join configurations of the plan carry the new token; the apply then
// creates it on the cluster (kubeadm token create) and records that with
// RecordBootstrapTokenCreated. An expired token is replaced rather than
// created again, so a copy left in an old join configuration on some host
// never becomes valid again.
func RenewBootstrapToken(dir string, now time.Time) (Secrets, error) {
	return renewSecrets(dir, func(s *Secrets) {
		s.BootstrapToken, s.BootstrapTokenCreated, s.BootstrapTokenPending = newBootstrapToken(), now, true
	})
}

// RenewCertificateKey replaces the stored certificate key with a new one
// generated at now and marks it pending. kprov calls it before planning when
// a master is about to join and the certificates uploaded with the current
// key have been (or will soon be) deleted; the apply then uploads the
// certificates again, encrypted with the new key, and records that with
// RecordCertificatesUploaded.
func RenewCertificateKey(dir string, now time.Time) (Secrets, error) {
	return renewSecrets(dir, func(s *Secrets) {
		s.CertificateKey, s.CertificateKeyCreated, s.CertificateKeyPending = newCertificateKey(), now, true
	})
}

// RecordBootstrapTokenCreated records that the apply created token on the
// cluster at: its TTL runs from then, and it is no longer pending. It
// changes nothing and reports false when the state directory holds another
// token by now (a later plan renewed it again), which then stays pending.
func RecordBootstrapTokenCreated(dir string, token Secret, at time.Time) (bool, error) {
	return recordSecrets(dir, func(s *Secrets) bool {
		if s.BootstrapToken != token {
			return false
		}
		s.BootstrapTokenCreated, s.BootstrapTokenPending = at, false
		return true
	})
}

// RecordCertificatesUploaded records that the apply uploaded the
// control-plane certificates encrypted with key at: kubeadm deletes them
// CertificateKeyTTL later, and the key is no longer pending. It changes
// nothing and reports false when the state directory holds another key.
func RecordCertificatesUploaded(dir string, key Secret, at time.Time) (bool, error) {
	return recordSecrets(dir, func(s *Secrets) bool {
		if s.CertificateKey != key {
			return false
		}
		s.CertificateKeyCreated, s.CertificateKeyPending = at, false
		return true
	})
}

func renewSecrets(dir string, change func(*Secrets)) (Secrets, error) {
	var out Secrets
	_, err := recordSecrets(dir, func(s *Secrets) bool {
		change(s)
		out = *s
		return true
	})
	return out, err
}

// recordSecrets reads secrets.json, applies change and writes the file back
// when change reports it changed something.
func recordSecrets(dir string, change func(*Secrets) bool) (bool, error) {
	if err := checkDir(dir); err != nil {
		return false, err
	}
	s, err := readSecrets(dir)
	if err != nil {
		return false, err
	}
	if !change(&s) {
		return false, nil
	}
	if err := writeSecrets(dir, s); err != nil {
		return false, err
	}
	return true, nil
}
