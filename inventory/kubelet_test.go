package inventory

import (
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// TestKubeletExtraArgsRules: flag names, one-word values, node-ip, and every
// flag kprov sets refused with the field to use instead.
func TestKubeletExtraArgsRules(t *testing.T) {
	valid := map[string]string{
		"max-pods":      "250",
		"v":             "2",
		"node-ip":       "10.0.1.41",
		"eviction-hard": "memory.available<100Mi,nodefs.available<10%",
		"feature-gates": "A=true,B=false",
		"resolv-conf":   "",
		"kube-reserved": "cpu=100m,memory=256Mi",
	}
	if d := checkKubeletExtraArgs("n", valid, hcl.Range{}); len(d) > 0 {
		t.Errorf("valid arguments refused: %v", d)
	}
	for _, ip := range []string{"192.0.2.1", "2001:db8::1", "192.0.2.1,2001:db8::1"} {
		if d := checkKubeletExtraArgs("n", map[string]string{"node-ip": ip}, hcl.Range{}); len(d) > 0 {
			t.Errorf("node-ip %s: %v", ip, d)
		}
	}
	invalid := []struct{ name, value, want string }{
		{"", "x", "is not a kubelet flag name"},
		{"max-pods\n--anonymous-auth", "true", "is not a kubelet flag name"},
		{"Max-Pods", "1", "is not a kubelet flag name"},
		{"-max-pods", "1", "without the leading dashes"},
		{"--max-pods", "1", "without the leading dashes"},
		{"max_pods", "1", "is not a kubelet flag name"},
		{"v", "2 --anonymous-auth=true", "whitespace"},
		{"v", "2\n", "whitespace or a control character"},
		{"v", "2\x00", "control character"},
		{"v", "2\u00a0", "whitespace"},
		{"v", "\xff", "not valid UTF-8"},
		{"feature-gates", `A=true" --anonymous-auth="true`, "quote"},
		{"feature-gates", `A=\true`, "backslash"},
		{"feature-gates", "A=$(id)", "'$'"},
		{"feature-gates", "A=`id`", "backtick"},
		{"node-ip", "fe80::1%eth0", "not an IP address (without a zone)"},
		{"node-ip", "node-1.example", "not an IP address"},
		{"node-ip", "192.0.2.1,192.0.2.2", "same family"},
		{"node-ip", "192.0.2.1,2001:db8::1,2001:db8::2", "takes one address"},
	}
	for _, c := range invalid {
		d := checkKubeletExtraArgs("n", map[string]string{c.name: c.value}, hcl.Range{})
		if len(d) != 1 || !strings.Contains(d[0].Detail, c.want) {
			t.Errorf("%q = %q: got %v, want one error containing %q", c.name, c.value, d, c.want)
		}
	}
	for flag, set := range kubeletFlagsKprovSets {
		d := checkKubeletExtraArgs("n", map[string]string{flag: "x"}, hcl.Range{})
		if len(d) != 1 || !strings.Contains(d[0].Detail, "kprov sets the kubelet flag") {
			t.Errorf("%s: got %v, want it refused", flag, d)
			continue
		}
		if set.field != "" && !strings.Contains(d[0].Detail, "use "+set.field+" instead") {
			t.Errorf("%s: %q does not name the field to use, %s", flag, d[0].Detail, set.field)
		}
	}
	for _, flag := range []string{"hostname-override", "node-labels", "register-with-taints", "anonymous-auth", "cgroup-driver", "container-runtime-endpoint"} {
		if _, ok := kubeletFlagsKprovSets[flag]; !ok {
			t.Errorf("%s is set by kprov but not refused", flag)
		}
	}
}
