package main

import (
	"io"
	"os"
	"sync"
)

// redactWriter passes everything kprov prints through the inventory's
// redactor, so a value from a `sensitive = true` variable never reaches
// the terminal, a log or a script: it shows as "(sensitive)". Until an
// inventory is loaded it passes text through. Each Write is redacted whole;
// kprov's printers write a line, a record or a document per Write, so a
// value is never split across two.
type redactWriter struct {
	w      io.Writer
	mu     sync.Mutex
	redact func(string) string
}

func (r *redactWriter) Write(p []byte) (int, error) {
	r.mu.Lock()
	redact := r.redact
	r.mu.Unlock()
	if redact == nil {
		return r.w.Write(p)
	}
	if _, err := io.WriteString(r.w, redact(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (r *redactWriter) set(redact func(string) string) {
	r.mu.Lock()
	r.redact = redact
	r.mu.Unlock()
}

// Fd, Read and Close make a redactWriter over a terminal look like that
// terminal (charmbracelet's term.File) to the libraries that ask its size
// and colours, while everything written still goes through the redactor.
func (r *redactWriter) Fd() uintptr {
	if f, ok := r.file(); ok {
		return f.Fd()
	}
	return ^uintptr(0)
}

func (r *redactWriter) Read(p []byte) (int, error) {
	if f, ok := r.file(); ok {
		return f.Read(p)
	}
	return 0, io.EOF
}

// Close leaves the terminal open: stdout and stderr outlive any view.
func (r *redactWriter) Close() error { return nil }

// file is the terminal or file beneath, for terminal checks.
func (r *redactWriter) file() (*os.File, bool) {
	f, ok := r.w.(*os.File)
	return f, ok
}

// asFile finds the *os.File beneath w, if any.
func asFile(w io.Writer) (*os.File, bool) {
	switch v := w.(type) {
	case *os.File:
		return v, true
	case *redactWriter:
		return v.file()
	}
	return nil, false
}
