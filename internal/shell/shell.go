// Package shell quotes words for POSIX sh, the one place kprov does so.
package shell

import "strings"

// Quote returns s as one sh word: single-quoted, with each single quote
// written as '\”. Nothing inside single quotes is special to sh, so any
// byte string (spaces, $, `, newlines) comes through as itself.
func Quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Join quotes every word and joins them with spaces.
func Join(words ...string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = Quote(w)
	}
	return strings.Join(q, " ")
}
