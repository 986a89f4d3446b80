package provision

import (
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

	// defaults is what inventory.Load gives a host with no ssh settings.
	defaults := inventory.SSHConfig{User: "root", Port: 22, KnownHosts: userKH,
		HostKeyPolicy: "strict", ConnectTimeout: 10 * time.Second}
	with := func(change func(*inventory.SSHConfig)) inventory.SSHConfig {
		s := defaults
		change(&s)
		return s
	}
	base := ssh.Config{Host: "cp-1", Address: "10.0.0.5", Port: 22, User: "root",
		KnownHostsFiles: []string{userKH, globalKH}, HostKeyPolicy: ssh.PolicyStrict,
		ConnectTimeout: 10 * time.Second, Attempts: 5, RetryBackoff: time.Second}
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
				s.ConnectTimeout, s.HostKeyPolicy = 3*time.Second, "accept-new"
			}),
			want: want(func(c *ssh.Config) {
				c.KnownHostsFiles = []string{"/inv/cluster.known_hosts", userKH, globalKH}
				c.IdentityFiles, c.User, c.Port = []string{"/keys/id_ed25519"}, "deploy", 2222
				c.ConnectTimeout, c.HostKeyPolicy = 3*time.Second, ssh.PolicyAcceptNew
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
					ConnectTimeout: 10 * time.Second, Attempts: 5, RetryBackoff: time.Second}}
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
					ConnectTimeout: 10 * time.Second, Attempts: 5, RetryBackoff: time.Second}
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
					HostKeyPolicy: ssh.PolicyStrict, ConnectTimeout: 10 * time.Second, Attempts: 5, RetryBackoff: time.Second}}
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
