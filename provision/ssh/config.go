// Package ssh is kprov's transport to hosts: one verified SSH connection per
// host, commands (through sudo -n when needed), atomic SFTP uploads, downloads,
// TCP forwarding and bounded fan-out over many hosts.
package ssh

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kevinburke/ssh_config"
)

// HostKeyPolicy says what to do with a host whose key is not yet recorded.
type HostKeyPolicy string

const (
	// PolicyStrict refuses hosts whose key is not in known_hosts or pinned.
	PolicyStrict HostKeyPolicy = "strict"
	// PolicyAcceptNew records an unknown host's key in the first known_hosts
	// file; a changed key is still refused.
	PolicyAcceptNew HostKeyPolicy = "accept-new"
)

// Defaults used when a Config leaves a field zero.
const (
	DefaultPort           = 22
	DefaultUser           = "root"
	DefaultConnectTimeout = 10 * time.Second
	DefaultKeepAlive      = 15 * time.Second
	DefaultAttempts       = 1
	DefaultRetryBackoff   = time.Second
	DefaultMaxOutput      = 1 << 20
)

// Config is how to reach and trust one host. The inventory maps its ssh
// block onto it; values set here win over ~/.ssh/config, which fills only
// what is left unset (ApplySSHConfig).
type Config struct {
	Host            string        // inventory name, used in logs and errors
	Address         string        // DNS name or IP; empty means ssh_config's HostName, else Host
	Port            int           // 0 means ssh_config's Port, else 22
	User            string        // empty means ssh_config's User, else root
	IdentityFiles   []string      // private keys; none means ssh_config's IdentityFile; KEY-cert.pub beside one is offered as a certificate
	KnownHostsFiles []string      // checked in order; accept-new writes to the first
	HostKeyPolicy   HostKeyPolicy // empty means strict
	HostKey         string        // pinned key, authorized_keys format; replaces known_hosts for this host
	Bastions        []Config      // jump hosts, outermost first
	ConnectTimeout  time.Duration // per attempt, TCP connect plus handshake
	CommandTimeout  time.Duration // default per command; 0 means none
	KeepAlive       time.Duration // interval of keepalive@openssh.com probes; negative disables
	Attempts        int           // connection attempts for hosts still booting
	RetryBackoff    time.Duration // first wait between attempts, doubled each time
}

// hostport is the address used to dial, to look up known_hosts and to
// record a key there, with the host in canonicalHost's form, so that every
// lookup and every write sees one spelling of a host.
func (c Config) hostport() string {
	return net.JoinHostPort(canonicalHost(c.Address), strconv.Itoa(c.Port))
}

// withDefaults fills zero fields; it does not read any file.
func (c Config) withDefaults() Config {
	if c.Address == "" {
		c.Address = c.Host
	}
	if c.Host == "" {
		c.Host = c.Address
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.User == "" {
		c.User = DefaultUser
	}
	if c.HostKeyPolicy == "" {
		c.HostKeyPolicy = PolicyStrict
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.Attempts <= 0 {
		c.Attempts = DefaultAttempts
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = DefaultRetryBackoff
	}
	// Copy before filling in: the caller's slice must not be modified, or a
	// later Config sharing it would silently inherit these defaults.
	c.Bastions = slices.Clone(c.Bastions)
	for i := range c.Bastions {
		b := c.Bastions[i]
		// A hop inherits how patient and how trusting to be from its target
		// unless it says otherwise, but never the target's pinned key.
		if b.KnownHostsFiles == nil {
			b.KnownHostsFiles = c.KnownHostsFiles
		}
		if b.HostKeyPolicy == "" {
			b.HostKeyPolicy = c.HostKeyPolicy
		}
		if b.IdentityFiles == nil {
			b.IdentityFiles = c.IdentityFiles
		}
		if b.ConnectTimeout == 0 {
			b.ConnectTimeout = c.ConnectTimeout
		}
		if b.KeepAlive == 0 {
			b.KeepAlive = c.KeepAlive
		}
		b.Bastions = nil
		c.Bastions[i] = b.withDefaults()
	}
	return c
}

// validate rejects settings that would silently weaken host verification.
func (c Config) validate() error {
	switch c.HostKeyPolicy {
	case PolicyStrict, PolicyAcceptNew:
	default:
		return fmt.Errorf("host_key_policy %q: want %q or %q", c.HostKeyPolicy, PolicyStrict, PolicyAcceptNew)
	}
	if c.Address == "" {
		return errors.New("no address")
	}
	// Checked before anything is dialled or recorded: Go's dialer ignores
	// an IPv6 zone it does not know, so "::1%lo<newline>..." would connect,
	// and the rest of it would reach known_hosts under accept-new.
	if err := checkPlainHost(c.Address); err != nil {
		return fmt.Errorf("address %w; fix the address in the inventory (or the HostName in ~/.ssh/config it came from)", err)
	}
	if c.Port < 1 || c.Port > 65535 {
		return fmt.Errorf("port %d out of range", c.Port)
	}
	return nil
}

// DefaultKnownHostsFiles returns the files OpenSSH itself consults, after
// inventoryFile (if any), which comes first so accept-new writes there.
func DefaultKnownHostsFiles(inventoryFile, home string) []string {
	var files []string
	if inventoryFile != "" {
		files = append(files, inventoryFile)
	}
	if home != "" {
		files = append(files, filepath.Join(home, ".ssh", "known_hosts"))
	}
	return append(files, "/etc/ssh/ssh_known_hosts")
}

// ParseBastion parses "user@host:port" (user and port optional) into a hop.
func ParseBastion(s string) (Config, error) {
	var c Config
	rest := strings.TrimSpace(s)
	if rest == "" {
		return c, errors.New("empty bastion")
	}
	if u, h, ok := strings.Cut(rest, "@"); ok {
		c.User, rest = u, h
	}
	if host, port, err := net.SplitHostPort(rest); err == nil {
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return c, fmt.Errorf("bastion %q: bad port %q", s, port)
		}
		c.Address, c.Port = host, p
	} else {
		c.Address = strings.Trim(rest, "[]")
	}
	if c.Address == "" {
		return c, fmt.Errorf("bastion %q: no host", s)
	}
	c.Host = c.Address
	return c, nil
}

// ParseBastions parses an OpenSSH ProxyJump list: hops separated by commas,
// outermost first.
func ParseBastions(list string) ([]Config, error) {
	if strings.TrimSpace(list) == "" || strings.EqualFold(strings.TrimSpace(list), "none") {
		return nil, nil
	}
	var hops []Config
	for _, s := range strings.Split(list, ",") {
		h, err := ParseBastion(s)
		if err != nil {
			return nil, err
		}
		hops = append(hops, h)
	}
	return hops, nil
}

// ApplySSHConfig fills what the Config leaves unset from an OpenSSH client
// config file (usually ~/.ssh/config), matched against the Config's Address
// (or Host when it has none) as OpenSSH matches the name on its command line.
// A missing file is not an error.
//
// The precedence is the same for every field: a value the Config sets (the
// inventory's) wins; ssh_config fills a field left unset; the built-in
// defaults (root, port 22) come last, in withDefaults. So:
//
//   - HostName replaces the Address only when there is none: an address the
//     inventory wrote is used as written, so a stray ~/.ssh/config entry
//     cannot redirect a host the inventory pins down. Hops that come from
//     ssh_config's own ProxyJump are aliases, and resolve through HostName as
//     OpenSSH resolves them.
//   - User, Port and IdentityFile fill an unset user, port or identity list,
//     for the host and for each bastion (the inventory's or ProxyJump's).
//   - ProxyJump supplies the bastions when the Config has none.
//
// Nothing that decides trust is read from ssh_config: UserKnownHostsFile,
// GlobalKnownHostsFile and StrictHostKeyChecking are ignored, and a hop from
// ProxyJump checks its key exactly as the host it leads to (withDefaults),
// so an ssh_config written for interactive use ("UserKnownHostsFile
// /dev/null", "StrictHostKeyChecking no") cannot weaken what the inventory
// asks for.
func ApplySSHConfig(c Config, path, home string) (Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("ssh config: %w", err)
	}
	sc, err := ssh_config.DecodeBytes(data)
	if err != nil {
		return c, fmt.Errorf("ssh config %s: %w", path, err)
	}
	return applySSHConfig(c, sc, path, home)
}

func applySSHConfig(c Config, sc *ssh_config.Config, path, home string) (Config, error) {
	// Every field is looked up under the name the Config gave, as OpenSSH
	// matches Host lines against the name on its command line, not against
	// the HostName they lead to.
	alias := c.Address
	if alias == "" {
		alias = c.Host
	}
	c, err := applyHostSSHConfig(c, sc, path, home)
	if err != nil {
		return c, err
	}
	if len(c.Bastions) == 0 {
		jump, _ := sc.Get(alias, "ProxyJump")
		hops, err := ParseBastions(jump)
		if err != nil {
			return c, fmt.Errorf("ssh config %s: host %s: ProxyJump: %w", path, alias, err)
		}
		for i := range hops {
			// A ProxyJump hop names an ssh_config alias, not an address.
			hops[i].Address = ""
		}
		c.Bastions = hops
	} else {
		// Copy before filling in: the caller's slice is shared.
		c.Bastions = slices.Clone(c.Bastions)
	}
	for i, h := range c.Bastions {
		// A hop's own ProxyJump is already represented by the hops before it.
		h, err = applyHostSSHConfig(h, sc, path, home)
		if err != nil {
			return c, err
		}
		c.Bastions[i] = h
	}
	return c, nil
}

// applyHostSSHConfig fills one hop's unset HostName, User, Port and
// IdentityFile; see ApplySSHConfig for the precedence.
func applyHostSSHConfig(c Config, sc *ssh_config.Config, path, home string) (Config, error) {
	alias := c.Address
	if alias == "" {
		alias = c.Host
	}
	get := func(key string) string {
		v, _ := sc.Get(alias, key)
		return v
	}
	if c.Address == "" {
		if hn := get("HostName"); hn != "" {
			c.Address = strings.NewReplacer("%h", alias, "%%", "%").Replace(hn)
		}
	}
	if c.Host == "" {
		c.Host = alias
	}
	if c.User == "" {
		c.User = get("User")
	}
	if c.Port == 0 {
		if p := get("Port"); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 || n > 65535 {
				return c, fmt.Errorf("ssh config %s: host %s: Port %q is not a number from 1 to 65535", path, alias, p)
			}
			c.Port = n
		}
	}
	if len(c.IdentityFiles) == 0 {
		host := c.Address
		if host == "" {
			host = alias
		}
		user := c.User
		if user == "" {
			user = DefaultUser
		}
		expand := strings.NewReplacer("%d", home, "%h", host, "%r", user, "%%", "%")
		ids, _ := sc.GetAll(alias, "IdentityFile")
		for _, id := range ids {
			id = expand.Replace(id)
			if rest, ok := strings.CutPrefix(id, "~/"); ok {
				id = filepath.Join(home, rest)
			}
			c.IdentityFiles = append(c.IdentityFiles, id)
		}
	}
	return c, nil
}
