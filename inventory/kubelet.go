package inventory

import (
	"net/netip"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
)

// kubelet_extra_args reach the kubelet through kubeadm, which writes them
// into /var/lib/kubelet/kubeadm-flags.env as one double-quoted systemd
// environment value, KUBELET_KUBEADM_ARGS="--name=value ...", that the
// kubelet's unit splits at whitespace. A space in a value therefore becomes
// a second flag ("a --anonymous-auth=true"), a quote or backslash ends or
// escapes the quoted value, and a newline starts another variable. kprov
// accepts flag names and single-word values only, and refuses the flags it
// sets itself, so an extra argument can never undo what the rest of the
// inventory says.

// kubeletFlagName is a kubelet flag as kubelet_extra_args names it: without
// the leading "--".
var kubeletFlagName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// kubeletValueForbidden are the characters, besides whitespace and control
// characters, that end, escape or expand a value in kubeadm-flags.env or in a
// shell that might source it. No kubelet flag needs them.
const kubeletValueForbidden = "\"'\\`$"

// kubeletFlagsKprovSets are the kubelet flags that kprov sets, directly or
// through the configuration it gives kubeadm (templates/node-registration,
// templates/kubeadm-init's KubeletConfiguration and kubeadm's defaults for
// it), with the inventory field to use instead, if any, and why. node-ip is
// not here: kprov sets it to the host's address only when the inventory
// does not (see roles.hostData), and checks the inventory's value instead.
var kubeletFlagsKprovSets = map[string]struct{ field, why string }{
	"hostname-override":            {"the host block's name", "kubeadm names the node after the host"},
	"node-labels":                  {"the host's labels", "kprov sets node labels through the API once the node has joined"},
	"register-with-taints":         {"the host's taints", "kubeadm registers the node with the host's taints"},
	"cluster-domain":               {"cluster.dns_domain", "kubeadm puts the cluster's DNS domain in the KubeletConfiguration"},
	"cluster-dns":                  {"cluster.service_subnet", "kubeadm gives the kubelet the cluster DNS service's address in the service subnet"},
	"container-runtime-endpoint":   {"", "kprov configures containerd and gives kubeadm its socket"},
	"cgroup-driver":                {"", "kprov sets cgroupDriver: systemd in the KubeletConfiguration, to match containerd"},
	"config":                       {"", "kubeadm points the kubelet at the KubeletConfiguration kprov renders"},
	"kubeconfig":                   {"", "kubeadm writes the kubelet's kubeconfig when the node joins"},
	"bootstrap-kubeconfig":         {"", "kubeadm writes the bootstrap kubeconfig when the node joins"},
	"pod-manifest-path":            {"", "kubeadm runs the control plane from /etc/kubernetes/manifests"},
	"client-ca-file":               {"", "the KubeletConfiguration trusts the cluster CA that kprov keeps"},
	"anonymous-auth":               {"", "the KubeletConfiguration refuses anonymous requests"},
	"authentication-token-webhook": {"", "the KubeletConfiguration checks tokens with the API server"},
	"authorization-mode":           {"", "the KubeletConfiguration has the API server authorize requests (Webhook)"},
	"rotate-certificates":          {"", "the KubeletConfiguration rotates the kubelet's client certificate"},
}

// checkKubeletExtraArgs checks each flag name and value; r is the
// kubelet_extra_args attribute.
func checkKubeletExtraArgs(host string, args map[string]string, r hcl.Range) hcl.Diagnostics {
	var diags hcl.Diagnostics
	bad := func(format string, a ...any) {
		diags = append(diags, errorAt(r, "Invalid kubelet_extra_args", format, a...))
	}
	for _, name := range keys(args) {
		value := args[name]
		switch {
		case strings.HasPrefix(name, "-") && kubeletFlagName.MatchString(strings.TrimLeft(name, "-")):
			bad("Host %q: write the kubelet flag %q without the leading dashes: %q = \"...\".", host, name, strings.TrimLeft(name, "-"))
			continue
		case !kubeletFlagName.MatchString(name):
			bad("Host %q: %q is not a kubelet flag name (lower case letters, digits and '-', starting with a letter or digit, without the leading --).", host, name)
			continue
		}
		if set, ok := kubeletFlagsKprovSets[name]; ok {
			if set.field != "" {
				bad("Host %q: kprov sets the kubelet flag %q itself (%s); use %s instead.", host, name, set.why, set.field)
			} else {
				bad("Host %q: kprov sets the kubelet flag %q itself (%s), and the inventory cannot change it. Remove it.", host, name, set.why)
			}
			continue
		}
		if why := kubeletValueProblem(value); why != "" {
			bad("Host %q: the value %q of kubelet flag %q %s: kubeadm writes it into the kubelet's flags file, where it would end the quoted value or become another flag. Give each flag one word.", host, value, name, why)
			continue
		}
		if name == "node-ip" {
			if why := nodeIPProblem(value); why != "" {
				bad("Host %q: node-ip %q %s.", host, value, why)
			}
		}
	}
	return diags
}

// kubeletValueProblem says what is wrong with a flag value, or "".
func kubeletValueProblem(v string) string {
	if !utf8.ValidString(v) {
		return "is not valid UTF-8"
	}
	for _, r := range v {
		switch {
		case unicode.IsSpace(r) || unicode.IsControl(r):
			return "contains whitespace or a control character"
		case strings.ContainsRune(kubeletValueForbidden, r):
			return "contains a quote, backslash, backtick or '$'"
		}
	}
	return ""
}

// nodeIPProblem checks the kubelet's --node-ip: one IP address, or an IPv4
// and an IPv6 address separated by a comma (dual stack), without zones.
func nodeIPProblem(v string) string {
	parts := strings.Split(v, ",")
	if len(parts) > 2 {
		return "takes one address, or an IPv4 and an IPv6 address separated by a comma"
	}
	for _, p := range parts {
		a, err := netip.ParseAddr(p)
		if err != nil || a.Zone() != "" {
			return "is not an IP address (without a zone)"
		}
	}
	if len(parts) == 2 {
		a, _ := netip.ParseAddr(parts[0])
		b, _ := netip.ParseAddr(parts[1])
		if a.Unmap().Is4() == b.Unmap().Is4() {
			return "has two addresses of the same family; dual stack takes one IPv4 and one IPv6 address"
		}
	}
	return ""
}
