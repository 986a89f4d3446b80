package inventory

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agext/levenshtein"
	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"golang.org/x/mod/semver"
)

// build turns the decoded schema into an Inventory, checking each field on its
// own. Checks that need the whole host list live in validateTopology.
func (l *loader) build(raw *fileSchema) (*Inventory, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	inv := &Inventory{}

	if len(raw.Clusters) == 0 {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Missing cluster block",
			Detail:   "An inventory needs one cluster \"NAME\" { kubernetes_version = \"1.37.2\" } block.",
		}}
	}
	diags = append(diags, onlyOne("cluster", len(raw.Clusters), func(i int) hcl.Range { return raw.Clusters[i].DefRange })...)
	diags = append(diags, onlyOne("ssh", len(raw.SSH), func(i int) hcl.Range { return raw.SSH[i].DefRange })...)
	diags = append(diags, onlyOne("etcd", len(raw.Etcd), func(i int) hcl.Range { return raw.Etcd[i].DefRange })...)
	diags = append(diags, onlyOne("infra", len(raw.Infra), func(i int) hcl.Range { return raw.Infra[i].DefRange })...)
	diags = append(diags, onlyOne("artifacts", len(raw.Artifacts), func(i int) hcl.Range { return raw.Artifacts[i].DefRange })...)

	diags = append(diags, l.buildCluster(raw.Clusters[0], &inv.Cluster)...)

	// User and port stay unset unless the inventory sets them, so that
	// ~/.ssh/config's User and Port can fill them before the transport's
	// own defaults (root, 22) do: the inventory's explicit values win.
	inv.SSH = SSHConfig{
		KnownHosts:      l.path(DefaultKnownHosts),
		HostKeyPolicy:   HostKeyPolicyStrict,
		ConnectTimeout:  DefaultConnectTimeout,
		ConnectAttempts: DefaultConnectAttempts,
	}
	if len(raw.SSH) > 0 {
		diags = append(diags, l.mergeSSH(&inv.SSH, raw.SSH[0])...)
	}

	inv.Etcd = Etcd{Version: DefaultEtcdVersion, DataDir: DefaultEtcdDataDir,
		HeartbeatInterval: DefaultEtcdHeartbeat, ElectionTimeout: DefaultEtcdElection,
		QuotaBackendBytes: DefaultEtcdQuota, SnapshotCount: DefaultEtcdSnapshotCount}
	if len(raw.Etcd) > 0 {
		diags = append(diags, buildEtcd(raw.Etcd[0], &inv.Etcd)...)
	}

	inv.Infra = InfraDefaults{
		Labels: map[string]string{InfraRoleLabel: ""},
		Taints: []Taint{{Key: InfraRoleLabel, Effect: "NoSchedule"}},
	}
	if len(raw.Infra) > 0 {
		diags = append(diags, l.buildInfra(raw.Infra[0], &inv.Infra)...)
	}

	if len(raw.Artifacts) > 0 {
		arts, images, d := l.buildArtifacts(raw.Artifacts[0])
		inv.Images = images
		diags = append(diags, d...)
		inv.Artifacts = arts
	}

	diags = append(diags, mergeContainerd(&inv.Containerd, raw.Containerd, "The inventory")...)

	inv.Hosts = make([]*Host, 0, len(raw.Hosts))
	for _, hb := range raw.Hosts {
		h, d := l.buildHost(hb, inv.SSH)
		diags = append(diags, d...)
		h.Containerd = inv.Containerd
		diags = append(diags, mergeContainerd(&h.Containerd, hb.Containerd, fmt.Sprintf("Host %q", hb.Name))...)
		inv.Hosts = append(inv.Hosts, h)
	}
	podSubnetAt := raw.Clusters[0].PodSubnetRange
	if raw.Clusters[0].PodSubnet == nil {
		podSubnetAt = raw.Clusters[0].DefRange
	}
	diags = append(diags, checkPodSubnetSize(inv, podSubnetAt)...)
	return inv, diags
}

func onlyOne(block string, n int, at func(int) hcl.Range) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for i := 1; i < n; i++ {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  fmt.Sprintf("Duplicate %s block", block),
			Detail:   fmt.Sprintf("An inventory takes one %s block; the first is at %s. Merge the two.", block, shortRange(at(0))),
			Subject:  at(i).Ptr(),
		})
	}
	return diags
}

func errorAt(r hcl.Range, summary, format string, args ...any) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: fmt.Sprintf(format, args...), Subject: r.Ptr()}
}

func warningAt(r hcl.Range, summary, format string, args ...any) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: summary, Detail: fmt.Sprintf(format, args...), Subject: r.Ptr()}
}

// dns1123Label is a Kubernetes node or cluster name component.
var dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

func (l *loader) buildCluster(cb *clusterBlock, c *Cluster) hcl.Diagnostics {
	var diags hcl.Diagnostics
	c.Name = cb.Name
	c.DefRange = cb.DefRange
	if !dns1123Subdomain.MatchString(cb.Name) || len(cb.Name) > 63 {
		diags = append(diags, errorAt(cb.LabelRange, "Invalid cluster name",
			"Cluster name %q must be lower case letters, digits, '-' and '.', start and end with a letter or digit, at most 63 characters: it names the state directory and the etcd cluster token.", cb.Name))
	}

	if cb.KubernetesVersion == nil {
		diags = append(diags, errorAt(cb.DefRange, "Missing kubernetes_version",
			"The cluster block needs kubernetes_version, for example kubernetes_version = \"1.37.2\"."))
	} else {
		v, err := parseVersion(*cb.KubernetesVersion)
		if err != nil {
			diags = append(diags, errorAt(cb.KubernetesVersionRange, "Invalid kubernetes_version", "%v.", err))
		} else if semver.Major("v"+v) != "v1" {
			diags = append(diags, errorAt(cb.KubernetesVersionRange, "Invalid kubernetes_version", "kubeadm serves Kubernetes 1.x; %q is not a 1.x release.", v))
		} else {
			c.KubernetesVersion = v
		}
	}

	if cb.ControlPlaneEndpoint != nil {
		ep, err := parseEndpoint(*cb.ControlPlaneEndpoint)
		if err != nil {
			diags = append(diags, errorAt(cb.ControlPlaneEndpointRange, "Invalid control_plane_endpoint", "%v.", err))
		}
		c.ControlPlaneEndpoint = ep
		l.derived(*cb.ControlPlaneEndpoint, ep)
	}
	diags = append(diags, onlyOne("api_endpoint", len(cb.APIEndpoint), func(i int) hcl.Range { return cb.APIEndpoint[i].DefRange })...)
	diags = append(diags, buildAPIEndpoint(cb, c)...)

	c.PodSubnet, diags = parseSubnet(diags, "pod_subnet", cb.PodSubnet, DefaultPodSubnet, cb.PodSubnetRange)
	c.ServiceSubnet, diags = parseSubnet(diags, "service_subnet", cb.ServiceSubnet, DefaultServiceSubnet, cb.ServiceSubnetRange)
	if c.ServiceSubnet.IsValid() && c.ServiceSubnet.Addr().Is4() && c.ServiceSubnet.Bits() < 12 {
		diags = append(diags, errorAt(cb.ServiceSubnetRange, "service_subnet too large",
			"The API server allows at most 20 bits of service addresses; %s has %d. Use a /12 or smaller, such as %s.",
			c.ServiceSubnet, 32-c.ServiceSubnet.Bits(), DefaultServiceSubnet))
	}
	if c.PodSubnet.IsValid() && c.ServiceSubnet.IsValid() && c.PodSubnet.Overlaps(c.ServiceSubnet) {
		r := cb.ServiceSubnetRange
		if cb.ServiceSubnet == nil {
			r = cb.PodSubnetRange
		}
		if r.Filename == "" {
			r = cb.DefRange
		}
		diags = append(diags, errorAt(r, "Overlapping subnets",
			"pod_subnet %s and service_subnet %s overlap: pods and services would receive the same addresses. Choose subnets that do not overlap.", c.PodSubnet, c.ServiceSubnet))
	}

	c.PodNetwork, c.PodNetworkRange = PodNetworkRoutes, cb.DefRange
	if cb.PodNetwork != nil {
		c.PodNetworkRange = cb.PodNetworkRange
		switch *cb.PodNetwork {
		case PodNetworkRoutes, PodNetworkNone:
			c.PodNetwork = *cb.PodNetwork
		default:
			diags = append(diags, errorAt(cb.PodNetworkRange, "Invalid pod_network",
				"pod_network is %q or %q, not %q.", PodNetworkRoutes, PodNetworkNone, *cb.PodNetwork))
		}
	}

	c.DNSDomain = DefaultDNSDomain
	if cb.DNSDomain != nil {
		c.DNSDomain = *cb.DNSDomain
		if !dns1123Subdomain.MatchString(c.DNSDomain) {
			diags = append(diags, errorAt(cb.DNSDomainRange, "Invalid dns_domain", "%q is not a valid DNS domain.", c.DNSDomain))
		}
	}
	if cb.TemplatesDir != nil {
		c.TemplatesDir = l.path(*cb.TemplatesDir)
	}
	c.StateDir = l.path(filepath.Join(".kprov", c.Name))
	if cb.StateDir != nil {
		c.StateDir = l.path(*cb.StateDir)
	}
	return diags
}

// parseVersion accepts 1.37.2 or v1.37.2 and returns it without the v.
func parseVersion(s string) (string, error) {
	v := strings.TrimPrefix(s, "v")
	if !semver.IsValid("v"+v) || strings.Count(v, ".") < 2 {
		return "", fmt.Errorf("%q is not a MAJOR.MINOR.PATCH version such as \"1.37.2\"", s)
	}
	return v, nil
}

// buildAPIEndpoint settles how nodes reach the API servers. Without an
// api_endpoint block, control_plane_endpoint means "external"; otherwise
// the mode is decided with the topology (validateTopology: node-local with
// several masters, direct with one).
func buildAPIEndpoint(cb *clusterBlock, c *Cluster) hcl.Diagnostics {
	var diags hcl.Diagnostics
	c.APIEndpointRange = cb.DefRange
	if cb.ControlPlaneEndpoint != nil {
		c.APIEndpoint, c.APIEndpointRange = APIEndpointExternal, cb.ControlPlaneEndpointRange
	}
	if len(cb.APIEndpoint) == 0 {
		return nil
	}
	b := cb.APIEndpoint[0]
	c.APIEndpointRange = b.DefRange
	if b.Mode == nil {
		return append(diags, errorAt(b.DefRange, "Missing api_endpoint mode",
			"The api_endpoint block needs mode = %q (a proxy on every node to every master) or %q (control_plane_endpoint is your load balancer).",
			APIEndpointNodeLocal, APIEndpointExternal))
	}
	switch *b.Mode {
	case APIEndpointNodeLocal:
		if cb.ControlPlaneEndpoint != nil {
			diags = append(diags, errorAt(cb.ControlPlaneEndpointRange, "control_plane_endpoint with a node-local endpoint",
				"api_endpoint mode = %q (%s) puts a proxy on every node at 127.0.0.1, which becomes the control-plane endpoint; control_plane_endpoint would contradict it. Remove control_plane_endpoint, or set mode = %q to use it.",
				APIEndpointNodeLocal, shortRange(b.ModeRange), APIEndpointExternal))
		}
		c.APIEndpoint, c.APIProxyPort = APIEndpointNodeLocal, DefaultAPIProxyPort
		if b.Port != nil {
			switch p := *b.Port; {
			case p < 1 || p > 65535:
				diags = append(diags, errorAt(b.PortRange, "Invalid api_endpoint port", "port %d is not a TCP port (1-65535).", p))
			case p == DefaultAPIServerPort || p == 10250 || p == 2379 || p == 2380:
				diags = append(diags, errorAt(b.PortRange, "api_endpoint port in use by Kubernetes",
					"port %d is the API server's, the kubelet's or etcd's on the nodes; the proxy needs a port of its own, such as %d.", p, DefaultAPIProxyPort))
			default:
				c.APIProxyPort = p
			}
		}
		c.ControlPlaneEndpoint = net.JoinHostPort("127.0.0.1", strconv.Itoa(c.APIProxyPort))
	case APIEndpointExternal:
		if cb.ControlPlaneEndpoint == nil {
			diags = append(diags, errorAt(b.ModeRange, "Missing control_plane_endpoint",
				"api_endpoint mode = %q needs control_plane_endpoint: the address and port of your load balancer, virtual IP or DNS name in front of every master, e.g. \"api.example.internal:6443\".", APIEndpointExternal))
		}
		if b.Port != nil {
			diags = append(diags, errorAt(b.PortRange, "api_endpoint port with an external endpoint",
				"port is the node-local proxy's; an external endpoint's port is part of control_plane_endpoint. Remove port."))
		}
		c.APIEndpoint = APIEndpointExternal
	default:
		diags = append(diags, errorAt(b.ModeRange, "Invalid api_endpoint mode",
			"mode is %q or %q, not %q.", APIEndpointNodeLocal, APIEndpointExternal, *b.Mode))
	}
	return diags
}

// parseEndpoint accepts host, host:port, [host] or [host]:port and returns
// host:port (6443 by default). The host is an IP literal without a zone or a
// DNS name: it goes into every node's kubeconfig and the API server's
// certificate.
func parseEndpoint(s string) (string, error) {
	host, port, hasPort, err := splitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("%v; write host:port, e.g. \"api.example.internal:6443\"", err)
	}
	p := DefaultAPIServerPort
	if hasPort {
		if p, err = checkPort(port); err != nil {
			return "", fmt.Errorf("%q: %v", s, err)
		}
	}
	if err := checkHost(host, zoneRefused); err != nil {
		return "", fmt.Errorf("%q: %v", s, err)
	}
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}

func parseSubnet(diags hcl.Diagnostics, field string, val *string, def string, r hcl.Range) (netip.Prefix, hcl.Diagnostics) {
	s := def
	if val != nil {
		s = *val
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, append(diags, errorAt(r, "Invalid "+field, "%q is not a CIDR such as %q: %v.", s, def, err))
	}
	if p.Masked() != p {
		return netip.Prefix{}, append(diags, errorAt(r, "Invalid "+field, "%q has host bits set; did you mean %q?", s, p.Masked().String()))
	}
	return p, diags
}

func (l *loader) mergeSSH(dst *SSHConfig, sb *sshBlock) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if sb.User != nil {
		if !validUser(*sb.User) {
			diags = append(diags, errorAt(sb.UserRange, "Invalid ssh user", "%q is not a user name: it must not be empty or contain whitespace, control characters, '@' or ':'.", *sb.User))
		}
		dst.User = *sb.User
	}
	if sb.Port != nil {
		if *sb.Port < 1 || *sb.Port > 65535 {
			diags = append(diags, errorAt(sb.PortRange, "Invalid ssh port", "Port %d is not from 1 to 65535.", *sb.Port))
		}
		dst.Port = *sb.Port
	}
	if sb.IdentityFile != nil {
		dst.IdentityFile = l.path(*sb.IdentityFile)
	}
	if sb.KnownHosts != nil {
		dst.KnownHosts = l.path(*sb.KnownHosts)
	}
	if sb.HostKeyPolicy != nil {
		switch p := *sb.HostKeyPolicy; p {
		case HostKeyPolicyStrict, HostKeyPolicyAcceptNew:
			dst.HostKeyPolicy = p
		default:
			diags = append(diags, errorAt(sb.HostKeyPolicyRange, "Invalid host_key_policy",
				"%q is not a host key policy; use \"strict\" (refuse unknown hosts) or \"accept-new\" (record unknown hosts, refuse changed keys).%s",
				p, suggestion(p, []string{HostKeyPolicyStrict, HostKeyPolicyAcceptNew})))
		}
	}
	if sb.ConnectTimeout != nil {
		d, err := time.ParseDuration(*sb.ConnectTimeout)
		if err != nil || d <= 0 {
			diags = append(diags, errorAt(sb.ConnectTimeoutRange, "Invalid connect_timeout", "%q is not a positive duration such as \"10s\".", *sb.ConnectTimeout))
		} else {
			dst.ConnectTimeout = d
		}
	}
	if sb.ConnectAttempts != nil {
		if n := *sb.ConnectAttempts; n < 1 || n > MaxConnectAttempts {
			diags = append(diags, errorAt(sb.ConnectAttemptsRange, "Invalid connect_attempts", "%d is not from 1 to %d: give 1 for no retry, 2 (the default) for one short retry, more for hosts that are still booting.", n, MaxConnectAttempts))
		} else {
			dst.ConnectAttempts = n
		}
	}
	if sb.Bastion != cty.NilVal && !sb.Bastion.IsNull() {
		chain, err := bastionChain(sb.Bastion)
		if err != nil {
			diags = append(diags, errorAt(sb.BastionRange, "Invalid bastion", "%v.", err))
		} else {
			dst.Bastions = chain
		}
	}
	return diags
}

// bastionChain accepts one jump host or a list of them, outermost first.
func bastionChain(v cty.Value) ([]string, error) {
	var items []cty.Value
	switch {
	case v.Type() == cty.String:
		items = []cty.Value{v}
	case v.Type().IsTupleType() || v.Type().IsListType():
		items = v.AsValueSlice()
	default:
		return nil, fmt.Errorf("bastion is a string \"user@host:port\" or a list of them, not %s", v.Type().FriendlyName())
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		if it.IsNull() || !it.IsKnown() || it.Type() != cty.String {
			return nil, fmt.Errorf("each bastion is a string \"user@host:port\"")
		}
		s := it.AsString()
		if err := checkJumpHost(s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// checkJumpHost checks one bastion, [user@]host[:port]. The user may not
// contain '@', so this and provision/ssh (which splits at the first '@')
// agree on where the host starts.
func checkJumpHost(s string) error {
	hostport := s
	if user, rest, ok := strings.Cut(s, "@"); ok {
		if user == "" {
			return fmt.Errorf("bastion %q has an empty user", s)
		}
		if !validUser(user) {
			return fmt.Errorf("bastion %q: the user %q must not contain whitespace, control characters, '@' or ':'", s, user)
		}
		if strings.Contains(rest, "@") {
			return fmt.Errorf("bastion %q has more than one '@'; a user name cannot contain '@'", s)
		}
		hostport = rest
	}
	host, port, hasPort, err := splitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("bastion %q is not [user@]host[:port]: %v", s, err)
	}
	if hasPort {
		if _, err := checkPort(port); err != nil {
			return fmt.Errorf("bastion %q: %v", s, err)
		}
	}
	if host == "" {
		return fmt.Errorf("bastion %q has no host", s)
	}
	if err := checkHost(host, zoneAllowed); err != nil {
		return fmt.Errorf("bastion %q: %v", s, err)
	}
	return nil
}

func buildEtcd(eb *etcdBlock, e *Etcd) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if eb.Version != nil {
		v, err := parseVersion(*eb.Version)
		if err != nil {
			diags = append(diags, errorAt(eb.VersionRange, "Invalid etcd version", "%v.", err))
		} else if semver.Compare("v"+v, "v3.5.0") < 0 {
			diags = append(diags, errorAt(eb.VersionRange, "Unsupported etcd version", "etcd %s has no learner promotion that kprov relies on for safe membership changes; use 3.5 or newer.", v))
		}
		e.Version = v
	}
	if eb.MaxFsyncLatency != nil {
		d, err := time.ParseDuration(*eb.MaxFsyncLatency)
		switch {
		case err != nil:
			diags = append(diags, errorAt(eb.MaxFsyncLatencyRange, "Invalid etcd max_fsync_latency", "%q is not a duration: write it like \"10ms\".", *eb.MaxFsyncLatency))
		case d < time.Millisecond || d > time.Second:
			diags = append(diags, errorAt(eb.MaxFsyncLatencyRange, "Invalid etcd max_fsync_latency", "%s is out of range: give 1ms to 1s (etcd's guidance is 10ms; above it heartbeats come late and leaders flap).", d))
		default:
			e.MaxFsyncLatency = d
		}
	}
	diags = append(diags, buildEtcdTuning(eb, e)...)
	if eb.DataDir != nil {
		// Removing a member ends in rm -rf of this path on its host.
		if err := CheckEtcdDataDir(*eb.DataDir); err != nil {
			diags = append(diags, errorAt(eb.DataDirRange, "Invalid etcd data_dir", "%v.", err))
		} else {
			e.DataDir = *eb.DataDir
		}
	}
	return diags
}

// sha256Hex is a SHA-256 as sha256sum prints it.
var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// buildArtifacts reads each `NAME = { path = "...", sha256 = "..." }` entry
// and the `images = [ { path = "...", sha256 = "..." }, ... ]` list.
// The files are not read here: loading stays independent of the operator's
// disk, and apply checks each checksum right before it uploads.
func (l *loader) buildArtifacts(ab *artifactsBlock) ([]Artifact, []Artifact, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	byName := map[string]Artifact{}
	var images []Artifact
	known := append(slices.Clone(ArtifactNames), ImagesField)
	for _, name := range keys(ab.Entries) {
		attr := ab.Entries[name]
		if name == ImagesField {
			imgs, d := l.buildImages(attr)
			diags = append(diags, d...)
			images = imgs
			continue
		}
		if !slices.Contains(ArtifactNames, name) {
			diags = append(diags, errorAt(attr.NameRange, "Unknown artifact",
				"kprov installs %s, and takes image archives as %s; %q is not one of them.%s",
				strings.Join(ArtifactNames, ", "), ImagesField, name, suggestion(name, known)))
			continue
		}
		v, d := attr.Expr.Value(l.ctx)
		diags = append(diags, d...)
		if d.HasErrors() {
			continue
		}
		a, d := l.artifactEntry(name, name, v, attr.Range)
		diags = append(diags, d...)
		if !d.HasErrors() {
			byName[name] = a
		}
	}
	var out []Artifact
	for _, n := range ArtifactNames {
		if a, ok := byName[n]; ok {
			out = append(out, a)
		}
	}
	return out, images, diags
}

// buildImages reads `images = [ { path, sha256 }, ... ]`: image archives,
// each named images[i] in diagnostics. The same file twice is an error.
func (l *loader) buildImages(attr *hcl.Attribute) ([]Artifact, hcl.Diagnostics) {
	v, diags := attr.Expr.Value(l.ctx)
	if diags.HasErrors() {
		return nil, diags
	}
	if !v.IsKnown() || v.IsNull() || !(v.Type().IsListType() || v.Type().IsTupleType()) {
		return nil, append(diags, errorAt(attr.Range, "Invalid images",
			"images must be a list of image archives: images = [ { path = \"...\", sha256 = \"...\" } ]."))
	}
	var out []Artifact
	seen := map[string]int{}
	for it := v.ElementIterator(); it.Next(); {
		k, ev := it.Element()
		i, _ := k.AsBigFloat().Int64()
		label := fmt.Sprintf("%s[%d]", ImagesField, i)
		a, d := l.artifactEntry(ImagesField, label, ev, attr.Range)
		diags = append(diags, d...)
		if d.HasErrors() {
			continue
		}
		if j, dup := seen[a.SHA256]; dup {
			diags = append(diags, errorAt(attr.Range, "Duplicate image archive",
				"%s has the same sha256 as %s[%d]; list each archive once.", label, ImagesField, j))
			continue
		}
		seen[a.SHA256] = int(i)
		out = append(out, a)
	}
	return out, diags
}

// artifactEntry reads one `{ path = "...", sha256 = "..." }` object; label
// names it in diagnostics (etcd, images[2]).
func (l *loader) artifactEntry(name, label string, v cty.Value, rng hcl.Range) (Artifact, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	if !v.IsKnown() || v.IsNull() || !(v.Type().IsObjectType() || v.Type().IsMapType()) {
		return Artifact{}, append(diags, errorAt(rng, "Invalid artifact", "%s must be an object: { path = \"...\", sha256 = \"...\" }.", label))
	}
	a := Artifact{Name: name, Range: rng}
	for it := v.ElementIterator(); it.Next(); {
		k, ev := it.Element()
		field := k.AsString()
		if ev.IsNull() || !ev.IsKnown() || ev.Type() != cty.String {
			diags = append(diags, errorAt(rng, "Invalid artifact", "%s.%s must be a string.", label, field))
			continue
		}
		switch field {
		case "path":
			a.Path = ev.AsString()
		case "sha256":
			a.SHA256 = strings.ToLower(strings.TrimSpace(ev.AsString()))
			l.derived(ev.AsString(), a.SHA256)
		default:
			diags = append(diags, errorAt(rng, "Unknown artifact field",
				"%s has no field %q; an artifact takes path and sha256.%s", label, field, suggestion(field, []string{"path", "sha256"})))
		}
	}
	if a.Path == "" {
		diags = append(diags, errorAt(rng, "Missing artifact path", "%s needs path, the file on this machine (relative to the inventory, ~ allowed).", label))
	}
	if a.SHA256 == "" {
		diags = append(diags, errorAt(rng, "Missing artifact sha256", "%s needs sha256, the file's SHA-256 as 64 hex digits (sha256sum FILE prints it).", label))
	} else if !sha256Hex.MatchString(a.SHA256) {
		diags = append(diags, errorAt(rng, "Invalid artifact sha256",
			"%s needs sha256, the file's SHA-256 as 64 hex digits (sha256sum FILE prints it); got %q.", label, a.SHA256))
	}
	if !diags.HasErrors() {
		a.Path = l.path(a.Path)
	}
	return a, diags
}

func (l *loader) buildInfra(ib *infraBlock, d *InfraDefaults) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if ib.Labels != nil {
		diags = append(diags, checkLabels(*ib.Labels, ib.LabelsRange)...)
		d.Labels = *ib.Labels
	}
	if ib.Taints != nil {
		ts, td := parseTaints(*ib.Taints, ib.TaintsRange)
		l.derivedTaints(ts)
		diags = append(diags, td...)
		d.Taints = ts
	}
	return diags
}

func (l *loader) buildHost(hb *hostBlock, defaults SSHConfig) (*Host, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	h := &Host{
		Name:             hb.Name,
		Address:          hb.Address,
		HostKey:          "",
		KubeletExtraArgs: hb.KubeletExtraArgs,
		SSH:              defaults,
		DefRange:         hb.DefRange,
		AddressRange:     hb.AddressRange,
		RolesRange:       hb.RolesRange,
	}
	if !dns1123Subdomain.MatchString(hb.Name) || len(hb.Name) > 253 {
		diags = append(diags, errorAt(hb.LabelRange, "Invalid host name",
			"Host name %q becomes the Kubernetes node name: lower case letters, digits, '-' and '.', starting and ending with a letter or digit.", hb.Name))
	}
	if h.Address == "" {
		diags = append(diags, errorAt(hb.AddressRange, "Invalid address", "Host %q has an empty address.", hb.Name))
	} else if err := checkHost(h.Address, zoneAllowed); err != nil {
		diags = append(diags, errorAt(hb.AddressRange, "Invalid address", "Host %q: %v.", hb.Name, err))
	} else if a, err := netip.ParseAddr(h.Address); err == nil {
		h.Address = a.String()
		l.derived(hb.Address, h.Address)
	}

	if len(hb.Roles) == 0 {
		diags = append(diags, errorAt(hb.RolesRange, "No roles", "Host %q has no roles; give it one or more of %s.", hb.Name, roleList()))
	}
	for _, r := range hb.Roles {
		role := Role(r)
		if !slices.Contains(AllRoles, role) {
			names := make([]string, len(AllRoles))
			for i, ar := range AllRoles {
				names[i] = string(ar)
			}
			diags = append(diags, errorAt(hb.RolesRange, "Unknown role",
				"Host %q has role %q; the roles are %s.%s", hb.Name, r, roleList(), suggestion(r, names)))
			continue
		}
		if h.Has(role) {
			diags = append(diags, warningAt(hb.RolesRange, "Repeated role", "Host %q lists role %q twice.", hb.Name, r))
			continue
		}
		h.Roles = append(h.Roles, role)
	}
	slices.SortFunc(h.Roles, func(a, b Role) int { return slices.Index(AllRoles, a) - slices.Index(AllRoles, b) })

	diags = append(diags, checkKubeletExtraArgs(hb.Name, hb.KubeletExtraArgs, hb.KubeletExtraArgsRange)...)
	diags = append(diags, checkLabels(hb.Labels, hb.LabelsRange)...)
	h.Labels = hb.Labels
	ts, td := parseTaints(hb.Taints, hb.TaintsRange)
	l.derivedTaints(ts)
	diags = append(diags, td...)
	h.Taints = ts

	if hb.HostKey != nil {
		k := strings.TrimSpace(*hb.HostKey)
		if f := strings.Fields(k); len(f) < 2 || !strings.HasPrefix(f[0], "ssh-") && !strings.HasPrefix(f[0], "ecdsa-") {
			diags = append(diags, errorAt(hb.HostKeyRange, "Invalid host_key",
				"host_key takes a public key as it appears in known_hosts, such as \"ssh-ed25519 AAAAC3...\"; get it with ssh-keyscan or from /etc/ssh/ssh_host_ed25519_key.pub on the host."))
		}
		h.HostKey = k
	}
	for i, sb := range hb.SSH {
		if i > 0 {
			diags = append(diags, errorAt(sb.DefRange, "Duplicate ssh block", "Host %q has more than one ssh block; merge them.", hb.Name))
			continue
		}
		diags = append(diags, l.mergeSSH(&h.SSH, sb)...)
	}
	return h, diags
}

func roleList() string {
	parts := make([]string, len(AllRoles))
	for i, r := range AllRoles {
		parts[i] = string(r)
	}
	return strings.Join(parts, ", ")
}

// Label keys are an optional DNS prefix and a name; values are up to 63 characters.
var (
	labelName  = regexp.MustCompile(`^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`)
	labelValue = regexp.MustCompile(`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`)
)

func validLabelKey(k string) bool {
	prefix, name, hasPrefix := strings.Cut(k, "/")
	if !hasPrefix {
		name, prefix = prefix, ""
	} else if prefix == "" || len(prefix) > 253 || !dns1123Subdomain.MatchString(prefix) {
		return false
	}
	return len(name) <= 63 && labelName.MatchString(name)
}

func checkLabels(labels map[string]string, r hcl.Range) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, k := range keys(labels) {
		if !validLabelKey(k) {
			diags = append(diags, errorAt(r, "Invalid label", "Label key %q is not a Kubernetes label key ([prefix/]name, name up to 63 letters, digits, '-', '_', '.').", k))
		}
		if v := labels[k]; len(v) > 63 || !labelValue.MatchString(v) {
			diags = append(diags, errorAt(r, "Invalid label", "Label %q has value %q: values are up to 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit.", k, v))
		}
	}
	return diags
}

var taintEffects = []string{"NoSchedule", "PreferNoSchedule", "NoExecute"}

// parseTaints reads taints written as kubectl takes them: key[=value]:Effect.
func parseTaints(in []string, r hcl.Range) ([]Taint, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	out := make([]Taint, 0, len(in))
	for _, s := range in {
		kv, effect, ok := strings.Cut(s, ":")
		if !ok {
			diags = append(diags, errorAt(r, "Invalid taint", "Taint %q has no effect; write key=value:Effect, e.g. \"dedicated=ops:NoSchedule\".", s))
			continue
		}
		if !slices.Contains(taintEffects, effect) {
			diags = append(diags, errorAt(r, "Invalid taint", "Taint %q has effect %q; the effects are %s.%s", s, effect, strings.Join(taintEffects, ", "), suggestion(effect, taintEffects)))
			continue
		}
		key, value, _ := strings.Cut(kv, "=")
		if !validLabelKey(key) || len(value) > 63 || !labelValue.MatchString(value) {
			diags = append(diags, errorAt(r, "Invalid taint", "Taint %q: key and value follow the rules of label keys and values.", s))
			continue
		}
		t := Taint{Key: key, Value: value, Effect: effect}
		if slices.Contains(out, t) {
			continue
		}
		out = append(out, t)
	}
	return out, diags
}

// path resolves a path from the inventory: ~ is the home directory, and a
// relative path is relative to the inventory's directory, not the caller's.
func (l *loader) path(raw string) string {
	p := raw
	if p == "~" || strings.HasPrefix(p, "~/") {
		p = filepath.Join(l.opts.HomeDir, strings.TrimPrefix(p, "~"))
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(l.dir, p)
	}
	p = filepath.Clean(p)
	l.derived(raw, p)
	return p
}

// derived records a field's final form as sensitive when kprov rewrote a
// sensitive value into it (a resolved path, a normalized address), so the
// final form is redacted too.
func (l *loader) derived(raw, final string) {
	if raw != final && l.sens.contains(raw) {
		l.sens.add(final)
	}
}

// derivedTaints records the value of a taint built from a sensitive value,
// since the value is printed on its own too (validate --json prints key,
// value and effect). The key is left alone: it names what the taint is
// about, like a label key, and is redacted only where it holds a sensitive
// value itself.
func (l *loader) derivedTaints(ts []Taint) {
	for _, t := range ts {
		if l.sens.contains(t.String()) {
			l.sens.add(t.Value)
		}
	}
}

// suggestion returns ` Did you mean "x"?` for the nearest candidate, or "".
func suggestion(given string, candidates []string) string {
	best, bestDist := "", 3
	for _, c := range candidates {
		if d := levenshtein.Distance(given, c, nil); d < bestDist {
			best, bestDist = c, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" Did you mean %q?", best)
}
