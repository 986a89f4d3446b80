// Package templates holds kprov's built-in templates (*.tmpl, embedded) and
// loads them, each replaced by a file of the same name from the inventory's
// templates_dir when there is one. Templates are text/template; executing
// one is deterministic for the same data, and every failure names the
// template's file and line.
package templates

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
)

//go:embed *.tmpl
var builtin embed.FS

// Names of the built-in templates; an override in templates_dir uses the same file name.
const (
	KubeadmInit      = "kubeadm-init.yaml.tmpl"      // InitConfiguration, ClusterConfiguration, KubeletConfiguration, KubeProxyConfiguration
	KubeadmJoin      = "kubeadm-join.yaml.tmpl"      // JoinConfiguration for control-plane and worker joins
	EtcdConfig       = "etcd.yaml.tmpl"              // external etcd member: etcd --config-file
	EtcdUnit         = "etcd.service.tmpl"           // external etcd member: systemd unit
	Sysctl           = "sysctl.conf.tmpl"            // kernel parameters Kubernetes networking needs
	Modules          = "modules-load.conf.tmpl"      // kernel modules loaded at boot
	ContainerdConfig = "containerd-config.toml.tmpl" // containerd 2.x (configuration version 3)
	ContainerdUnit   = "containerd.service.tmpl"     // containerd's systemd unit
	KubeletPatch     = "kubelet-patch.yaml.tmpl"     // the node's own kubelet settings, a kubeadm patch
	CNIBridge        = "cni-bridge.conflist.tmpl"    // the node's bridge network, its slice of pod_subnet
	SwapOffUnit      = "swapoff.service.tmpl"        // turns swap off at every boot, before the kubelet
	PodRoutesUnit    = "pod-routes.service.tmpl"     // routes to the other nodes' pod subnets, masquerade out of pod_subnet
	KubeletUnit      = "kubelet.service.tmpl"        // the kubelet's systemd unit, with kubeadm's flags files
	APIProxyUnit     = "apiproxy.service.tmpl"       // the node-local API proxy's systemd unit (api_endpoint "node-local")
	APIProxyUpstream = "apiproxy.upstreams.tmpl"     // the API servers the node-local proxy spreads connections over
	NodeRegistration = "node-registration.yaml.tmpl" // partial: nodeRegistration of both kubeadm configurations
)

// Set is a loaded set of templates, one per built-in name. They share one
// namespace, so a template can include another by its file name (both
// kubeadm configurations include NodeRegistration).
type Set struct {
	root    *template.Template
	sources map[string]string // name -> where it was read from: "built-in" or the override's path
}

// Builtin loads the embedded templates alone.
func Builtin() (*Set, error) { return Load("") }

// Load parses the built-in templates, replacing each with the file of the
// same name in dir when dir (the inventory's templates_dir) is not empty.
// A file in dir that matches no built-in name is an error, because a
// misspelt override would otherwise be ignored without a word.
func Load(dir string) (*Set, error) {
	names, err := fs.Glob(builtin, "*.tmpl")
	if err != nil {
		return nil, err
	}
	overrides := map[string]string{}
	if dir != "" {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("templates_dir: %w", err)
		}
		for _, e := range entries {
			if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			if !slices.Contains(names, e.Name()) {
				return nil, fmt.Errorf("templates_dir: %s: no built-in template has this name; overrides must be one of %s",
					filepath.Join(dir, e.Name()), strings.Join(names, ", "))
			}
			overrides[e.Name()] = filepath.Join(dir, e.Name())
		}
	}
	s := &Set{root: template.New("").Option("missingkey=error").Funcs(funcs), sources: map[string]string{}}
	for _, name := range names {
		var text []byte
		source := "built-in"
		if path, ok := overrides[name]; ok {
			source = path
			text, err = os.ReadFile(path)
		} else {
			text, err = builtin.ReadFile(name)
		}
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", name, err)
		}
		s.sources[name] = source
		if _, err := s.root.New(name).Parse(string(text)); err != nil {
			return nil, newError(s.sources, name, err)
		}
	}
	return s, nil
}

// Source says where the named template came from: "built-in" or the path of its override.
func (s *Set) Source(name string) string { return s.sources[name] }

// Execute renders the named template with data.
func (s *Set) Execute(name string, data any) ([]byte, error) {
	if s.root.Lookup(name) == nil {
		return nil, fmt.Errorf("template %s: not loaded", name)
	}
	var buf bytes.Buffer
	if err := s.root.ExecuteTemplate(&buf, name, data); err != nil {
		return nil, newError(s.sources, name, err)
	}
	return buf.Bytes(), nil
}

// Error is a template that failed to parse or execute, located in its file.
type Error struct {
	File string // the override's path, or "built-in NAME"
	Line int    // 0 when text/template did not say
	Err  error  // text/template's error
}

// Error reads "FILE:LINE: message", the form editors jump to.
func (e *Error) Error() string {
	msg := templatePrefix.ReplaceAllString(e.Err.Error(), "")
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, msg)
	}
	return fmt.Sprintf("%s: %s", e.File, msg)
}

// Unwrap returns text/template's error.
func (e *Error) Unwrap() error { return e.Err }

// templatePrefix is how text/template starts every parse and execution
// error: "template: NAME:LINE:" or "template: NAME:LINE:COL:". NAME is the
// template the error is in, which may be a partial the executed one included.
var templatePrefix = regexp.MustCompile(`^template: ([^:]+):(\d+):(?:\d+:)? ?`)

// newError locates err in the file of the template it names.
func newError(sources map[string]string, name string, err error) error {
	if m := templatePrefix.FindStringSubmatch(err.Error()); m != nil && sources[m[1]] != "" {
		name = m[1]
	}
	file := sources[name]
	if file == "built-in" || file == "" {
		file = "built-in template " + name
	}
	e := &Error{File: file, Err: err}
	if m := templatePrefix.FindStringSubmatch(err.Error()); m != nil {
		e.Line, _ = strconv.Atoi(m[2])
	}
	return e
}

// funcs are the functions templates may call beyond text/template's own.
var funcs = template.FuncMap{
	// quote renders a string as a double-quoted YAML (and JSON) scalar, so
	// no value can change the document's structure.
	"quote": func(s string) (string, error) {
		var b strings.Builder
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false) // "<" stays "<", so placeholders read as written
		if err := enc.Encode(s); err != nil {
			return "", err
		}
		return strings.TrimSuffix(b.String(), "\n"), nil
	},
	"join": strings.Join,
}
