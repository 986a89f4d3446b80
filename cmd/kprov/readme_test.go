package main

import (
	"io"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestReadmeAgreesWithHelp: the README's Commands section and --help say
// the same. Every flag of every command is in the README (the global flags
// in their table, a command's own in its row) spelled as --help spells it,
// with the same value placeholder (--parallel N, --out FILE); the README
// names no flag a command lacks; and the exit codes table names every
// command. The lab's subcommands are documented in docs/lab.md, which must
// name each of their flags.
func TestReadmeAgreesWithHelp(t *testing.T) {
	readme := readFile(t, "../../README.md")
	start := strings.Index(readme, "\n## Commands\n")
	if start < 0 {
		t.Fatal("README.md has no Commands section")
	}
	section := readme[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	// The first cell of each table row: `-f, --file FILE`, `kprov plan [--offline] ...`.
	rows := map[string]string{} // command name (or "" for global flags) -> first cells
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cell := strings.SplitN(strings.ReplaceAll(line, `\|`, "/"), "|", 3)[1]
		name := ""
		if rest, ok := strings.CutPrefix(strings.TrimSpace(cell), "`kprov "); ok {
			words := strings.Fields(strings.TrimRight(rest, "`"))
			name = words[0]
			// A subcommand's row: `kprov backup verify FILE ...`.
			if len(words) > 1 && subcommandRE.MatchString(words[1]) {
				name += " " + words[1]
			}
		}
		rows[name] += cell + "\n"
	}
	flagRE := regexp.MustCompile(`--[a-z][a-z-]*`)
	// check says whether the README text documents fs exactly: each flag
	// with its placeholder, and no other flag.
	check := func(where, text string, fs *pflag.FlagSet) {
		t.Helper()
		known := map[string]bool{}
		fs.VisitAll(func(f *pflag.Flag) {
			if f.Name == "help" {
				return
			}
			known["--"+f.Name] = true
			want := "--" + f.Name
			if name, _ := pflag.UnquoteUsage(f); name != "" {
				want += " " + name
			}
			short := ""
			if f.Shorthand != "" {
				short = "-" + f.Shorthand + strings.TrimPrefix(want, "--"+f.Name)
			}
			if !strings.Contains(text, want) && (short == "" || !strings.Contains(text, short)) {
				t.Errorf("%s: README lacks %q as --help shows it", where, want)
			}
		})
		for _, f := range flagRE.FindAllString(text, -1) {
			if !known[f] {
				t.Errorf("%s: README names %s, which --help does not know", where, f)
			}
		}
	}
	root, _ := newRoot(io.Discard, io.Discard)
	check("global flags", rows[""], root.PersistentFlags())

	exitCodes := section[strings.Index(section, "Exit codes"):]
	lab := readFile(t, "../../docs/lab.md")
	for _, cmd := range root.Commands() {
		if cmd.Hidden || cmd.Name() == "help" {
			continue
		}
		if !strings.Contains(exitCodes, "`"+cmd.Name()+"`") {
			t.Errorf("README's exit codes do not name %s", cmd.Name())
		}
		if cmd.Name() == "lab" {
			checkLabDoc(t, lab, cmd)
			continue
		}
		text, ok := rows[cmd.Name()]
		if !ok {
			t.Errorf("README has no row for kprov %s", cmd.Name())
			continue
		}
		check("kprov "+cmd.Name(), text, cmd.LocalFlags())
		for _, sub := range cmd.Commands() {
			name := cmd.Name() + " " + sub.Name()
			if text, ok := rows[name]; ok {
				check("kprov "+name, text, sub.LocalFlags())
			} else if cmd.Name() != "completion" { // one row lists every shell
				t.Errorf("README has no row for kprov %s", name)
			}
		}
	}
}

// subcommandRE matches a subcommand's name in a command's row (not a
// placeholder, a flag or a list of choices).
var subcommandRE = regexp.MustCompile(`^[a-z]+$`)

// checkLabDoc fails for a flag of a lab subcommand that docs/lab.md does not name.
func checkLabDoc(t *testing.T, doc string, lab *cobra.Command) {
	t.Helper()
	for _, sub := range append([]*cobra.Command{lab}, lab.Commands()...) {
		sub.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if f.Name != "help" && !strings.Contains(doc, "--"+f.Name) {
				t.Errorf("docs/lab.md does not name --%s of kprov %s", f.Name, sub.CommandPath())
			}
		})
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
