package apiproxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// ReadUpstreams reads an upstreams file: one host:port a line (every
// master's kube-apiserver), with blank lines and # comments ignored. kprov
// writes the file; the strictness is for a hand edit, which should fail at
// SIGHUP with the line to fix rather than route clients to a typo.
func ReadUpstreams(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("upstreams: %w", err)
	}
	var addrs []string
	firstLine := map[string]int{}
	for i, line := range strings.Split(string(data), "\n") {
		n := i + 1
		line, _, _ = strings.Cut(line, "#")
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if err := checkHostPort(line); err != nil {
			return nil, fmt.Errorf("%s:%d: %q: %w", path, n, line, err)
		}
		if first, ok := firstLine[line]; ok {
			return nil, fmt.Errorf("%s:%d: %s is already listed on line %d", path, n, line, first)
		}
		firstLine[line] = n
		addrs = append(addrs, line)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%s: no upstreams (want one host:port a line, such as 10.0.0.11:6443)", path)
	}
	return addrs, nil
}

// checkHostPort accepts host:port or [ipv6]:port with a port in 1-65535.
func checkHostPort(s string) error {
	if strings.ContainsAny(s, " \t") {
		return errors.New("want one host:port a line, without spaces")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("want host:port: %w", err)
	}
	if host == "" {
		return errors.New("the host is empty")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return nil
}
