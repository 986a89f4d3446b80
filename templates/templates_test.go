package templates

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuiltinParses(t *testing.T) {
	s, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{KubeadmInit, KubeadmJoin, EtcdConfig, EtcdUnit, Sysctl, Modules, ContainerdConfig, SwapOffUnit, PodRoutesUnit, NodeRegistration} {
		if s.Source(name) != "built-in" {
			t.Errorf("%s: source %q, want built-in", name, s.Source(name))
		}
	}
}

// TestErrorsNameFileAndLine checks that a broken override is reported at its
// file and line, whether it fails to parse or to execute, and that a file
// named like no built-in template is refused.
func TestErrorsNameFileAndLine(t *testing.T) {
	for _, c := range []struct {
		name, file, text string
		want             string // substring of the error after "DIR/"
		atLoad           bool
	}{
		{"parse", Sysctl, "net.ipv4.ip_forward = 1\n{{if .Host.Name}\n", Sysctl + ":2: ", true},
		{"unknown function", Modules, "overlay\n\n{{frobnicate .Host}}\n", Modules + `:3: function "frobnicate" not defined`, true},
		{"execute", Sysctl, "# ok\n# ok\nx = {{.Host.Nmae}}\n", Sysctl + `:3: executing "` + Sysctl + `" at <.Host.Nmae>: can't evaluate field Nmae`, false},
		{"partial", NodeRegistration, "nodeRegistration:\n  name: {{.Nope}}\n", NodeRegistration + ":2: ", false},
		{"unknown name", "sysctl.tmpl", "x\n", "sysctl.tmpl: no built-in template has this name", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, c.file), []byte(c.text), 0o644); err != nil {
				t.Fatal(err)
			}
			s, err := Load(dir)
			if !c.atLoad {
				if err != nil {
					t.Fatal(err)
				}
				if s.Source(c.file) != filepath.Join(dir, c.file) {
					t.Errorf("source %q, want the override", s.Source(c.file))
				}
				name := c.file
				if c.file == NodeRegistration {
					name = KubeadmJoin // the partial fails inside the template that includes it
				}
				_, err = s.Execute(name, joinData{})
			}
			if err == nil {
				t.Fatal("want an error")
			}
			if !strings.Contains(err.Error(), filepath.Join(dir, c.want)) {
				t.Errorf("error %q\nwant it to contain %q", err, filepath.Join(dir, c.want))
			}
			var te *Error
			if c.name != "unknown name" && (!errors.As(err, &te) || te.Line == 0) {
				t.Errorf("want a *templates.Error with a line, got %#v", err)
			}
		})
	}
}

// joinData has the fields the join template reads before it includes NodeRegistration.
type joinData struct {
	Cluster struct{ KubeadmAPIVersion, JoinEndpoint string }
	Kubeadm struct {
		BootstrapToken, DiscoveryHash string
		ControlPlane                  bool
	}
	Host struct{ Name string }
}
