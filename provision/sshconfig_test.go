package provision

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/ssh"
)

func TestSSHConfig(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	userKH := filepath.Join(home, ".ssh", "known_hosts")
	const globalKH = "/etc/ssh/ssh_known_hosts"
	const pinned = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

	// defaults is what inventory.Load gives a host with no ssh settings: no
	// user or port, which ~/.ssh/config or the transport's defaults supply.
	defaults := inventory.SSHConfig{KnownHosts: userKH, HostKeyPolicy: "strict", ConnectTimeout: 10 * time.Second}
	with := func(change func(*inventory.SSHConfig)) inventory.SSHConfig {
		s := defaults
		change(&s)
		return s
	}
	base := ssh.Config{Host: "cp-1", Address: "10.0.0.5",
		KnownHostsFiles: []string{userKH, globalKH}, HostKeyPolicy: ssh.PolicyStrict,
		ConnectTimeout: 10 * time.Second, Attempts: 2, RetryBackoff: time.Second}
	want := func(change func(*ssh.Config)) ssh.Config {
		c := base
		change(&c)
		return c
	}

	tests := []struct {
		name    string
		invSSH  inventory.SSHConfig
		ssh     inventory.SSHConfig
		hostKey string
		want    ssh.Config
		wantErr string
	}{
		{
			name: "defaults read the user's known_hosts once",
			ssh:  defaults,
			want: base,
		},
		{
			name: "inventory known_hosts first, identity, user, port, timeout",
			ssh: with(func(s *inventory.SSHConfig) {
				s.KnownHosts, s.IdentityFile, s.User, s.Port = "/inv/cluster.known_hosts", "/keys/id_ed25519", "deploy", 2222
				s.ConnectTimeout, s.HostKeyPolicy, s.ConnectAttempts = 3*time.Second, "accept-new", 7
			}),
			want: want(func(c *ssh.Config) {
				c.KnownHostsFiles = []string{"/inv/cluster.known_hosts", userKH, globalKH}
				c.IdentityFiles, c.User, c.Port = []string{"/keys/id_ed25519"}, "deploy", 2222
				c.ConnectTimeout, c.HostKeyPolicy, c.Attempts = 3*time.Second, ssh.PolicyAcceptNew, 7
			}),
		},
		{
			name:    "pinned host key is the host's own, not its bastion's",
			ssh:     with(func(s *inventory.SSHConfig) { s.Bastions = []string{"jump@bastion.example:2200"} }),
			hostKey: pinned,
			want: want(func(c *ssh.Config) {
				c.HostKey = pinned
				c.Bastions = []ssh.Config{{Host: "bastion.example", Address: "bastion.example", Port: 2200, User: "jump",
					KnownHostsFiles: base.KnownHostsFiles, HostKeyPolicy: ssh.PolicyStrict,
					ConnectTimeout: 10 * time.Second, Attempts: 2, RetryBackoff: time.Second}}
			}),
		},
		{
			name: "bastion chain outermost first, each hop inheriting trust and identity",
			ssh: with(func(s *inventory.SSHConfig) {
				s.KnownHosts, s.IdentityFile, s.HostKeyPolicy = "/inv/kh", "/keys/id", "accept-new"
				s.Bastions = []string{"outer.example", "ops@[fd00::1]:22"}
			}),
			want: want(func(c *ssh.Config) {
				kh := []string{"/inv/kh", userKH, globalKH}
				c.KnownHostsFiles, c.IdentityFiles, c.HostKeyPolicy = kh, []string{"/keys/id"}, ssh.PolicyAcceptNew
				hop := ssh.Config{IdentityFiles: []string{"/keys/id"}, KnownHostsFiles: kh, HostKeyPolicy: ssh.PolicyAcceptNew,
					ConnectTimeout: 10 * time.Second, Attempts: 2, RetryBackoff: time.Second}
				outer, inner := hop, hop
				// No user@ or :port: left empty so ~/.ssh/config (or the transport's root/22) decides.
				outer.Host, outer.Address = "outer.example", "outer.example"
				inner.Host, inner.Address, inner.Port, inner.User = "fd00::1", "fd00::1", 22, "ops"
				c.Bastions = []ssh.Config{outer, inner}
			}),
		},
		{
			name:   "fields a hand-built host leaves zero come from the inventory",
			invSSH: with(func(s *inventory.SSHConfig) { s.User, s.Bastions = "deploy", []string{"b.example"} }),
			ssh:    inventory.SSHConfig{Port: 2022},
			want: want(func(c *ssh.Config) {
				c.User, c.Port = "deploy", 2022
				c.Bastions = []ssh.Config{{Host: "b.example", Address: "b.example", KnownHostsFiles: base.KnownHostsFiles,
					HostKeyPolicy: ssh.PolicyStrict, ConnectTimeout: 10 * time.Second, Attempts: 2, RetryBackoff: time.Second}}
			}),
		},
		{
			name:    "bad bastion names the host",
			ssh:     with(func(s *inventory.SSHConfig) { s.Bastions = []string{"b.example:99999"} }),
			wantErr: `cp-1: bastion "b.example:99999": bad port "99999"`,
		},
		{
			name:    "unknown policy is refused, not read as strict",
			ssh:     with(func(s *inventory.SSHConfig) { s.HostKeyPolicy = "yes" }),
			wantErr: `cp-1: host_key_policy "yes"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv := &inventory.Inventory{SSH: tt.invSSH}
			h := &inventory.Host{Name: "cp-1", Address: "10.0.0.5", HostKey: tt.hostKey, SSH: tt.ssh}
			got, err := SSHConfig(inv, h)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

// TestSSHConfigPrecedence follows each field from an HCL inventory through
// inventory.Parse, SSHConfig and the transport's Resolve with a
// ~/.ssh/config: the inventory's explicit values win (even when they equal
// the defaults), ~/.ssh/config fills what the inventory leaves unset, and
// root and 22 come last. The inventory's address is never replaced by a
// HostName.
func TestSSHConfigPrecedence(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	sshConfig := filepath.Join(home, ".ssh", "config")
	os.MkdirAll(filepath.Dir(sshConfig), 0o700)
	os.WriteFile(sshConfig, []byte(`
Host 10.0.0.5 cp1.example
  HostName 203.0.113.99
  User admin
  Port 2222
  IdentityFile ~/.ssh/id_cfg
  ProxyJump jumpalias
  UserKnownHostsFile /dev/null

Host jumpalias
  HostName 192.0.2.1
  User ops
  Port 2200

Host outer.example
  HostName 198.51.100.9
  User bastion
  Port 2022
`), 0o600)
	kh := filepath.Join(home, ".ssh", "known_hosts")

	tests := []struct {
		name, address, ssh, want string
	}{
		{
			name:    "inventory sets nothing: ssh_config fills user, port, identity and bastion, not the address",
			address: "10.0.0.5",
			want:    "10.0.0.5:2222 user=admin id=[~/.ssh/id_cfg] via=[ops@192.0.2.1:2200 strict " + kh + "]",
		},
		{
			name:    "HostName never replaces the inventory's DNS name",
			address: "cp1.example",
			want:    "cp1.example:2222 user=admin id=[~/.ssh/id_cfg] via=[ops@192.0.2.1:2200 strict " + kh + "]",
		},
		{
			name:    "explicit values win, even root and 22",
			address: "10.0.0.5",
			ssh:     "ssh {\n user = \"root\"\n port = 22\n identity_file = \"~/.ssh/id_inv\"\n bastion = \"me@outer.example:22\"\n}",
			want:    "10.0.0.5:22 user=root id=[~/.ssh/id_inv] via=[me@outer.example:22 strict " + kh + "]",
		},
		{
			name:    "an inventory bastion keeps its address; ssh_config fills its unset user and port",
			address: "10.0.0.5",
			ssh:     "ssh {\n bastion = \"outer.example\"\n host_key_policy = \"accept-new\"\n}",
			want:    "10.0.0.5:2222 user=admin id=[~/.ssh/id_cfg] via=[bastion@outer.example:2022 accept-new " + kh + "]",
		},
		{
			name:    "neither sets them: root and 22",
			address: "10.0.0.6",
			want:    "10.0.0.6:22 user=root id=[] via=[]",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := fmt.Sprintf("cluster \"c\" {\n  kubernetes_version = \"1.37.2\"\n  pod_network = \"none\"\n}\n%s\nhost \"cp-1\" {\n  address = %q\n  roles = [\"master\"]\n}\n", tt.ssh, tt.address)
			inv, diags := inventory.Parse([]byte(src), filepath.Join(home, "kprov.hcl"), inventory.Options{HomeDir: home})
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			cfg, err := SSHConfig(inv, inv.Hosts[0])
			if err != nil {
				t.Fatal(err)
			}
			got, err := ssh.NewPool(ssh.Options{SSHConfigFile: sshConfig, Home: home}).Resolve(cfg)
			if err != nil {
				t.Fatal(err)
			}
			short := func(files []string) []string {
				out := []string{}
				for _, f := range files {
					out = append(out, strings.Replace(f, home, "~", 1))
				}
				return out
			}
			via := []string{}
			for _, b := range got.Bastions {
				via = append(via, fmt.Sprintf("%s@%s:%d %s %s", b.User, b.Address, b.Port, b.HostKeyPolicy, b.KnownHostsFiles[0]))
			}
			summary := fmt.Sprintf("%s:%d user=%s id=%v via=%v", got.Address, got.Port, got.User, short(got.IdentityFiles), via)
			if summary != tt.want {
				t.Errorf("got  %s\nwant %s", summary, tt.want)
			}
		})
	}
}
