package lab

import (
	"fmt"
	"net/netip"
)

// labRange is where lab subnets come from: 198.18.0.0/15 is reserved for
// benchmarking (RFC 2544), so it never collides with a real network the
// host can reach.
var labRange = netip.MustParsePrefix("198.18.0.0/15")

// PickSubnet returns the first /24 of 198.18.0.0/15 that overlaps none of used.
func PickSubnet(used []netip.Prefix) (netip.Prefix, error) {
	return PickSubnetIn(labRange, used)
}

// PickSubnetIn returns the first /24 of within (a part of 198.18.0.0/15)
// that overlaps none of used.
func PickSubnetIn(within netip.Prefix, used []netip.Prefix) (netip.Prefix, error) {
	within = within.Masked()
	if within.Bits() < labRange.Bits() || within.Bits() > 24 || !labRange.Contains(within.Addr()) {
		return netip.Prefix{}, fmt.Errorf("subnets from %s: want a part of %s of at least a /24", within, labRange)
	}
	first := within.Addr().As4()
	for i := 0; i < 1<<(24-within.Bits()); i++ {
		a := first
		a[1] += byte(i / 256)
		a[2] += byte(i % 256)
		candidate := netip.PrefixFrom(netip.AddrFrom4(a), 24)
		free := true
		for _, u := range used {
			if u.Overlaps(candidate) {
				free = false
				break
			}
		}
		if free {
			return candidate, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no free /24 left in %s", within)
}

// checkSubnet refuses a subnet outside 198.18.0.0/15 or not a /24.
func checkSubnet(p netip.Prefix) error {
	if p.Bits() != 24 || !labRange.Contains(p.Addr()) || p.Masked() != p {
		return fmt.Errorf("subnet %s: want a /24 inside %s", p, labRange)
	}
	return nil
}

// gatewayAddr is the bridge's address on the host: .1 of the subnet.
func gatewayAddr(subnet netip.Prefix) netip.Addr { return hostAddr(subnet, 1) }

// machineAddr is machine index's address (index from 1): .11, .12, ...
func machineAddr(subnet netip.Prefix, index int) netip.Addr { return hostAddr(subnet, 10+index) }

func hostAddr(subnet netip.Prefix, n int) netip.Addr {
	a := subnet.Masked().Addr().As4()
	a[3] = byte(n)
	return netip.AddrFrom4(a)
}
