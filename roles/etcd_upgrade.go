package roles

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/semver"
)

// etcdUpgrade is why a member restarts for its etcd binary: the process
// runs from (the version it reported, "" when unknown) and will run to.
type etcdUpgrade struct {
	from, to string
	reason   string
}

// title names the restart stage: "upgrading member etcd-2: etcd 3.6.15 to
// 3.6.16", so the apply's output shows which member moved to what.
func (u *etcdUpgrade) title(member string) string {
	if u.from == "" || u.to == "" || u.from == u.to {
		return "restarting member " + member + " for its new etcd binary"
	}
	return fmt.Sprintf("upgrading member %s: etcd %s to %s", member, u.from, u.to)
}

// upgradeOf says whether the member must restart to run the etcd binary
// the plan leaves on its host, and why; nil when its process already runs
// it. The running version is what etcd reports (plan.EtcdMember.Version),
// so a member an interrupted upgrade already restarted is not restarted
// again, and one whose binary was replaced but which still runs the old
// process is. A member this plan starts runs the new binary from the start.
func (p *etcdPlanner) upgradeOf(m *planMember) *etcdUpgrade {
	if m.started || m.Host == "" {
		return nil
	}
	b := p.in.Binaries[m.Host]
	switch {
	case b.Replaced:
		return &etcdUpgrade{from: m.Version, to: p.in.Version,
			reason: "the prepare stage replaced the etcd binary with the inventory's artifact; the running process keeps the old one until it restarts"}
	case m.Version != "" && b.Version != "" && canonicalVersion(m.Version) != canonicalVersion(b.Version):
		return &etcdUpgrade{from: m.Version, to: b.Version,
			reason: fmt.Sprintf("the member runs etcd %s while the binary on its host is %s (an upgrade left unfinished, or a binary installed outside kprov): it restarts to run it", m.Version, b.Version)}
	}
	return nil
}

// checkVersions refuses a plan that would take a live member through a
// version change etcd does not support in a rolling restart: from the
// version it runs to the inventory's, and to the one its restart would run
// (the host's own binary may differ from the inventory's version when the
// inventory provides no etcd artifact). Members leaving the cluster are not
// checked: they are removed, not restarted.
func (p *etcdPlanner) checkVersions() error {
	for _, m := range p.st.members {
		if _, wanted := p.want[m.PeerURL]; !wanted || m.Version == "" {
			continue
		}
		targets := []struct{ version, source string }{{p.in.Version, "the inventory's etcd.version is"}}
		if u := p.upgradeOf(m); u != nil && u.to != p.in.Version {
			targets = append(targets, struct{ version, source string }{u.to, "the etcd binary on its host is"})
		}
		for _, t := range targets {
			if t.version == "" {
				continue
			}
			if err := checkVersionJump(m.Name, m.Version, t.version, t.source); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkVersionJump refuses the change from the running version to the
// target when etcd does not support it member by member:
//
//   - a minor (or major) version lower than the one running: etcd keeps
//     its data in the format of the cluster version, and going back needs
//     its downgrade procedure (etcdctl downgrade validate and enable, then
//     each member's binary replaced), which kprov does not run;
//   - more than one minor version up: etcd supports a mixed cluster of two
//     adjacent minor versions only, so every member must run 3.N before
//     any runs 3.N+1.
//
// A patch release up or down within one minor version is a plain rolling
// restart: the data format belongs to the minor version.
func checkVersionJump(member, running, target, source string) error {
	from, okF := minorVersion(running)
	to, okT := minorVersion(target)
	if !okF || !okT {
		return nil // not a release version: nothing to judge by
	}
	observed := fmt.Sprintf("it runs etcd %s and %s %s", running, source, target)
	switch {
	case from.major != to.major:
		return &RefusalError{Member: member, Observed: observed + ", a change of major version",
			Action: fmt.Sprintf("kprov upgrades etcd one minor version at a time within one major version; set etcd.version to a %d.%d release (with its artifacts)", from.major, from.minor)}
	case to.minor < from.minor:
		return &RefusalError{Member: member, Observed: observed + ", a downgrade",
			Action: fmt.Sprintf("going back a minor version needs etcd's own downgrade procedure (`etcdctl downgrade validate %d.%d`, `etcdctl downgrade enable %d.%d`, then every member's binary replaced), which kprov does not run: "+
				"set etcd.version back to %s (with its artifacts), or downgrade by etcd's procedure and then set etcd.version to the version the members run", to.major, to.minor, to.major, to.minor, running)}
	case to.minor > from.minor+1:
		next := fmt.Sprintf("%d.%d", from.major, from.minor+1)
		return &RefusalError{Member: member, Observed: observed + fmt.Sprintf(", skipping %s", next),
			Action: fmt.Sprintf("etcd upgrades one minor version at a time (every member on %s before any runs a later one): set etcd.version to a %s release (with its artifacts) and apply, then set %s and apply again", next, next, target)}
	}
	return nil
}

type majorMinor struct{ major, minor int }

// minorVersion reads MAJOR.MINOR from a version such as 3.6.16 or v3.6.0-rc.1.
func minorVersion(v string) (majorMinor, bool) {
	mm := semver.MajorMinor(canonicalVersion(v))
	major, minor, ok := strings.Cut(strings.TrimPrefix(mm, "v"), ".")
	if !ok {
		return majorMinor{}, false
	}
	a, errA := strconv.Atoi(major)
	b, errB := strconv.Atoi(minor)
	return majorMinor{a, b}, errA == nil && errB == nil
}

// canonicalVersion is v with a leading "v", as semver wants it; etcd
// reports "3.6.16", an inventory may say either.
func canonicalVersion(v string) string {
	return "v" + strings.TrimPrefix(v, "v")
}
