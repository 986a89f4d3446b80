package lab

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"

	"golang.org/x/crypto/ssh"
)

// sshKeyPair is an ed25519 key in OpenSSH's file formats.
type sshKeyPair struct {
	private []byte // PEM "OPENSSH PRIVATE KEY", for a 0600 file
	public  []byte // authorized_keys line, with a trailing newline
	signer  ssh.Signer
}

// newSSHKeyPair makes a fresh ed25519 key with comment as its OpenSSH comment.
func newSSHKeyPair(comment string) (sshKeyPair, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return sshKeyPair{}, fmt.Errorf("generate ed25519 key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return sshKeyPair{}, fmt.Errorf("encode private key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return sshKeyPair{}, fmt.Errorf("encode public key: %w", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return sshKeyPair{}, fmt.Errorf("make signer: %w", err)
	}
	line := ssh.MarshalAuthorizedKey(sshPub)
	line = append(line[:len(line)-1], []byte(" "+comment+"\n")...)
	return sshKeyPair{private: pem.EncodeToMemory(block), public: line, signer: signer}, nil
}
