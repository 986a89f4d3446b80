package ssh

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/term"

	"github.com/kprov/kprov/internal/shell"
)

// PassphraseFunc returns the passphrase for an encrypted private key file.
type PassphraseFunc func(file string) ([]byte, error)

// TerminalPassphrase prompts on the controlling terminal (/dev/tty), never on
// stdout, so it works while the program's output is piped. The CLI passes it
// in Options; the library itself never prompts on its own.
func TerminalPassphrase(file string) ([]byte, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("no terminal to ask for the passphrase: %w", err)
	}
	defer tty.Close()
	if !term.IsTerminal(int(tty.Fd())) {
		return nil, errors.New("no terminal to ask for the passphrase")
	}
	fmt.Fprintf(tty, "Enter passphrase for %s: ", file)
	pass, err := term.ReadPassword(int(tty.Fd()))
	fmt.Fprintln(tty)
	return pass, err
}

// keyring loads each identity file once per run, so an encrypted key asks
// for its passphrase once and not once per host.
type keyring struct {
	passphrase PassphraseFunc
	agentSock  string

	mu      sync.Mutex
	signers map[string][]ssh.Signer
	errs    map[string]error
	agent   agent.ExtendedAgent
	agentC  net.Conn
}

// signersFor returns the signers for a hop: certificates and keys from its
// identity files first (what the inventory asked for), then the agent's.
func (k *keyring) signersFor(files []string) ([]ssh.Signer, error) {
	var out []ssh.Signer
	for _, f := range files {
		s, err := k.load(f)
		if err != nil {
			return nil, err
		}
		out = append(out, s...)
	}
	if ag := k.agentClient(); ag != nil {
		s, err := ag.Signers()
		if err == nil {
			out = append(out, s...)
		}
	}
	return out, nil
}

func (k *keyring) load(file string) ([]ssh.Signer, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if s, ok := k.signers[file]; ok {
		return s, nil
	}
	if err, ok := k.errs[file]; ok {
		return nil, err
	}
	s, err := k.readKey(file)
	if err != nil {
		err = fmt.Errorf("%w %s: %w", ErrKeyFile, file, err)
		if k.errs == nil {
			k.errs = map[string]error{}
		}
		k.errs[file] = err
		return nil, err
	}
	if k.signers == nil {
		k.signers = map[string][]ssh.Signer{}
	}
	k.signers[file] = s
	return s, nil
}

func (k *keyring) readKey(file string) ([]ssh.Signer, error) {
	pem, err := readPrivateKeyFile(file)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.ParsePrivateKey(pem)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		if k.passphrase == nil {
			return nil, errors.New("key is encrypted and there is no terminal to ask for its passphrase; add it to ssh-agent or run kprov from a terminal")
		}
		pass, perr := k.passphrase(file)
		if perr != nil {
			return nil, fmt.Errorf("key is encrypted: %w", perr)
		}
		signer, err = ssh.ParsePrivateKeyWithPassphrase(pem, pass)
		clear(pass)
	}
	if err != nil {
		return nil, err
	}
	signers := []ssh.Signer{signer}
	// OpenSSH offers KEY-cert.pub automatically when it sits beside KEY;
	// servers that trust a user CA accept the certificate where the bare
	// key is not in authorized_keys.
	certFile := file + "-cert.pub"
	if data, err := os.ReadFile(certFile); err == nil {
		pub, _, _, _, err := ssh.ParseAuthorizedKey(data)
		if err != nil {
			return nil, fmt.Errorf("certificate %s: %w", certFile, err)
		}
		cert, ok := pub.(*ssh.Certificate)
		if !ok {
			return nil, fmt.Errorf("certificate %s: not a certificate", certFile)
		}
		cs, err := ssh.NewCertSigner(cert, signer)
		if err != nil {
			return nil, fmt.Errorf("certificate %s: %w", certFile, err)
		}
		signers = []ssh.Signer{cs, signer}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("certificate %s: %w", certFile, err)
	}
	return signers, nil
}

// agentClient connects to the agent once. An unreachable agent is not an
// error: key files may still work, and the auth error says what was tried.
func (k *keyring) agentClient() agent.ExtendedAgent {
	if k.agentSock == "" {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.agent == nil {
		c, err := net.Dial("unix", k.agentSock)
		if err != nil {
			return nil
		}
		k.agentC = c
		k.agent = agent.NewClient(c)
	}
	return k.agent
}

func (k *keyring) close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.agentC != nil {
		return k.agentC.Close()
	}
	return nil
}

// readPrivateKeyFile reads a private key, refusing it as OpenSSH does
// ("UNPROTECTED PRIVATE KEY FILE!") when the file belongs to the user
// running kprov and its mode gives group or others any access: a key others
// can read is no longer a secret, and one they can write can be replaced.
// The mode is taken from the open file, so it is the mode of what is read.
// A key owned by someone else is read as OpenSSH reads it: its owner, not
// this user, decides its mode.
func readPrivateKeyFile(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 && ownedByCaller(st) {
		return nil, fmt.Errorf("mode %04o gives group or others access to the private key (OpenSSH refuses it too); run \"chmod 600 %s\"",
			perm, shellWord(file))
	}
	return io.ReadAll(f)
}

// shellWord quotes s for a shell only when it needs it, so that the usual
// path in an error message reads as typed and an unusual one still pastes.
func shellWord(s string) string {
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune("/._-+,:@%", c)) {
			return shell.Quote(s)
		}
	}
	return s
}
