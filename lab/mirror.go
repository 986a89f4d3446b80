package lab

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// MirrorFromApt returns the Debian mirror the host's own apt uses for suite,
// read from /etc/apt/sources.list and /etc/apt/sources.list.d under root.
// The lab never hard-codes a mirror: a machine that can reach any mirror at
// all can reach the one its own apt is configured with.
func MirrorFromApt(root, suite string) (string, error) {
	files, _ := filepath.Glob(filepath.Join(root, "etc/apt/sources.list.d/*.sources"))
	lists, _ := filepath.Glob(filepath.Join(root, "etc/apt/sources.list.d/*.list"))
	files = append(files, lists...)
	files = append(files, filepath.Join(root, "etc/apt/sources.list"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var uri string
		if strings.HasSuffix(f, ".sources") {
			uri = mirrorFromDeb822(string(data), suite)
		} else {
			uri = mirrorFromOneLine(string(data), suite)
		}
		if uri != "" {
			return uri, nil
		}
	}
	return "", fmt.Errorf("no apt source for suite %s under %s", suite, filepath.Join(root, "etc/apt"))
}

// mirrorFromDeb822 finds the first URI of a "Types: deb" stanza listing suite.
func mirrorFromDeb822(text, suite string) string {
	for _, stanza := range strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n\n") {
		fields := map[string][]string{}
		for _, line := range strings.Split(stanza, "\n") {
			if strings.HasPrefix(line, "#") {
				continue
			}
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			fields[strings.ToLower(strings.TrimSpace(k))] = strings.Fields(v)
		}
		if strings.EqualFold(strings.Join(fields["enabled"], ""), "no") {
			continue
		}
		if slices.Contains(fields["types"], "deb") && slices.Contains(fields["suites"], suite) && len(fields["uris"]) > 0 {
			return strings.TrimSuffix(fields["uris"][0], "/")
		}
	}
	return ""
}

// mirrorFromOneLine finds the first "deb [options] URI suite ..." line for suite.
func mirrorFromOneLine(text, suite string) string {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "deb ") && !strings.HasPrefix(line, "deb\t") {
			continue
		}
		line = strings.TrimSpace(line[3:])
		if strings.HasPrefix(line, "[") {
			end := strings.Index(line, "]")
			if end < 0 {
				continue
			}
			line = line[end+1:]
		}
		f := strings.Fields(line)
		if len(f) >= 2 && f[1] == suite {
			return strings.TrimSuffix(f[0], "/")
		}
	}
	return ""
}
