//go:build unix

package ssh

import (
	"os"
	"syscall"
)

// ownedByCaller reports whether the file belongs to the user running kprov,
// the case in which OpenSSH checks a private key's mode.
func ownedByCaller(st os.FileInfo) bool {
	s, ok := st.Sys().(*syscall.Stat_t)
	return ok && int(s.Uid) == os.Getuid()
}
