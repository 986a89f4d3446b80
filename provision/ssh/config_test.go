package ssh

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestApplySSHConfig checks the precedence for every field ~/.ssh/config can
// supply: what the Config (the inventory) sets wins, ssh_config fills what
// it leaves unset, and the built-in defaults (root, 22) come last.
func TestApplySSHConfig(t *testing.T) {
	home := t.TempDir()
	cfgFile := filepath.Join(home, "config")
	os.WriteFile(cfgFile, []byte(`
Host cp1
  HostName 10.0.0.5
  User admin
  Port 2222
  IdentityFile ~/.ssh/id_%h_%r
  ProxyJump jump
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no

Host jump
  HostName 192.0.2.1
  User ops
  Port 2200
  IdentityFile %d/.ssh/id_jump
  UserKnownHostsFile /dev/null

Host outer.example
  User bastion
  Port 2022
  HostName 198.51.100.9

Host 10.0.0.7
  ProxyJump ops@jump:22,jump

Host badport
  Port 70000
`), 0o600)
	tests := []struct {
		name string
		in   Config
		want Config
	}{
		{
			name: "everything unset: ssh_config fills it, ProxyJump hops resolve as aliases",
			in:   Config{Host: "cp-1", Address: "cp1"},
			want: Config{Host: "cp-1", Address: "cp1", User: "admin", Port: 2222,
				IdentityFiles: []string{filepath.Join(home, ".ssh/id_cp1_admin")},
				Bastions: []Config{{Host: "jump", Address: "192.0.2.1", User: "ops", Port: 2200,
					IdentityFiles: []string{filepath.Join(home, ".ssh/id_jump")}}}},
		},
		{
			name: "the inventory's values win, even when they equal the defaults",
			in: Config{Host: "cp-1", Address: "cp1", User: "root", Port: 22, IdentityFiles: []string{"/k"},
				Bastions: []Config{{Host: "b.example", Address: "b.example", User: "u", Port: 22, IdentityFiles: []string{"/k"}}}},
			want: Config{Host: "cp-1", Address: "cp1", User: "root", Port: 22, IdentityFiles: []string{"/k"},
				Bastions: []Config{{Host: "b.example", Address: "b.example", User: "u", Port: 22, IdentityFiles: []string{"/k"}}}},
		},
		{
			name: "an inventory bastion keeps its address and gets its unset user and port from ssh_config",
			in:   Config{Host: "cp-2", Address: "10.0.0.6", Bastions: []Config{{Host: "outer.example", Address: "outer.example"}}},
			want: Config{Host: "cp-2", Address: "10.0.0.6",
				Bastions: []Config{{Host: "outer.example", Address: "outer.example", User: "bastion", Port: 2022}}},
		},
		{
			name: "HostName only names a Config that has no address",
			in:   Config{Host: "cp1"},
			want: Config{Host: "cp1", Address: "10.0.0.5", User: "admin", Port: 2222,
				IdentityFiles: []string{filepath.Join(home, ".ssh/id_10.0.0.5_admin")},
				Bastions: []Config{{Host: "jump", Address: "192.0.2.1", User: "ops", Port: 2200,
					IdentityFiles: []string{filepath.Join(home, ".ssh/id_jump")}}}},
		},
		{
			name: "ProxyJump's own user and port win over the hop's ssh_config",
			in:   Config{Host: "cp-3", Address: "10.0.0.7"},
			want: Config{Host: "cp-3", Address: "10.0.0.7", Bastions: []Config{
				{Host: "jump", Address: "192.0.2.1", User: "ops", Port: 22, IdentityFiles: []string{filepath.Join(home, ".ssh/id_jump")}},
				{Host: "jump", Address: "192.0.2.1", User: "ops", Port: 2200, IdentityFiles: []string{filepath.Join(home, ".ssh/id_jump")}},
			}},
		},
		{
			name: "no entry: nothing filled, withDefaults decides",
			in:   Config{Host: "cp-4", Address: "10.0.0.8"},
			want: Config{Host: "cp-4", Address: "10.0.0.8"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bastions := append([]Config(nil), tt.in.Bastions...)
			got, err := ApplySSHConfig(tt.in, cfgFile, home)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			if !reflect.DeepEqual(tt.in.Bastions, bastions) {
				t.Errorf("the caller's bastions were modified: %+v", tt.in.Bastions)
			}
		})
	}

	t.Run("defaults come last", func(t *testing.T) {
		got, _ := ApplySSHConfig(Config{Host: "cp-4", Address: "10.0.0.8"}, cfgFile, home)
		got = got.withDefaults()
		if got.User != DefaultUser || got.Port != DefaultPort {
			t.Errorf("user %q port %d, want %q %d", got.User, got.Port, DefaultUser, DefaultPort)
		}
		got, _ = ApplySSHConfig(Config{Host: "cp-1", Address: "cp1"}, cfgFile, home)
		if got = got.withDefaults(); got.User != "admin" || got.Port != 2222 {
			t.Errorf("user %q port %d, want ssh_config's admin 2222 over the defaults", got.User, got.Port)
		}
	})
	t.Run("trust is never read from ssh_config", func(t *testing.T) {
		got, _ := ApplySSHConfig(Config{Host: "cp-1", Address: "cp1", KnownHostsFiles: []string{"/inv/kh"}, HostKeyPolicy: PolicyAcceptNew}, cfgFile, home)
		got = got.withDefaults()
		for _, c := range append([]Config{got}, got.Bastions...) {
			if !reflect.DeepEqual(c.KnownHostsFiles, []string{"/inv/kh"}) || c.HostKeyPolicy != PolicyAcceptNew {
				t.Errorf("%s: known_hosts %q policy %q, want the inventory's", c.Host, c.KnownHostsFiles, c.HostKeyPolicy)
			}
		}
		got, _ = ApplySSHConfig(Config{Host: "cp-1", Address: "cp1"}, cfgFile, home)
		if got.withDefaults().HostKeyPolicy != PolicyStrict || len(got.KnownHostsFiles) != 0 {
			t.Errorf("ssh_config's UserKnownHostsFile or StrictHostKeyChecking was used: %+v", got)
		}
	})
	t.Run("bad port names the file and host", func(t *testing.T) {
		_, err := ApplySSHConfig(Config{Address: "badport"}, cfgFile, home)
		if err == nil || !strings.Contains(err.Error(), cfgFile+": host badport: Port \"70000\"") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		if _, err := ApplySSHConfig(Config{Address: "x"}, filepath.Join(home, "missing"), home); err != nil {
			t.Errorf("missing ssh config: %v", err)
		}
	})
}
