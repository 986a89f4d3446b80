package main

import (
	"bytes"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
	"golang.org/x/term"

	"github.com/kprov/kprov/provision"
)

// applyView is what apply reports through: the pipeline's View, the summary
// at the end, and finish, which ends any live display before that summary.
type applyView interface {
	provision.View
	finish()
	report(rep *provision.Report, took time.Duration)
}

var (
	_ applyView = (*textView)(nil)
	_ applyView = (*termView)(nil)
)

// finish has nothing to end: the text view prints only whole lines.
func (v *textView) finish() {}

// applyView picks the view for apply: on a terminal (stdout is one, the log
// format is text, TERM is not dumb) the live view; otherwise plain lines,
// as scripts, CI logs and --log-format json expect. The live view routes
// the log through itself, which sub-loggers made earlier (log.With) would
// bypass: call it before the pipeline and its connections are made.
func (g *globalOptions) applyView(c *provision.Cluster, detail bool) applyView {
	tv := g.textView(c, detail)
	// The live view writes through stdout's redactor (sensitive values never
	// show); the terminal beneath decides whether there is one.
	out, ok := asFile(g.stdout)
	if !ok || !term.IsTerminal(int(out.Fd())) || g.logFormat != "text" || os.Getenv("TERM") == "dumb" {
		return tv
	}
	return g.newTermView(tv, g.stdout, time.Now)
}

// termView shows apply on a terminal. The plan and the question are plain
// text, as in the text view; once the first stage starts, a live area
// (a bubbletea program writing to stdout) shows the stage, its progress and
// each busy host's current step. Whatever is done, a finished stage, a
// failed host, a warning or a log line, is printed above the live area and
// stays; the live area is erased when the run ends, before the summary
// tables, so the screen ends as plain text.
//
// The program takes no input: the terminal stays in its normal mode, so
// Ctrl-C reaches apply as SIGINT (which cancels the run as it does without
// the live view), and the program handles no signal itself.
type termView struct {
	*textView
	out      io.Writer
	renderer *lipgloss.Renderer
	styles   liveStyles
	now      func() time.Time
	logs     *lineWriter

	mu   sync.Mutex
	prog *tea.Program  // nil until the first stage, and again after finish
	done chan struct{} // closed when the program has returned
	// over is set by finish: the live area never comes back, so nothing
	// (a late event, say) can start a program that nobody stops, which
	// would hide the cursor and draw over the summary.
	over bool
}

func (g *globalOptions) newTermView(tv *textView, out io.Writer, now func() time.Time) *termView {
	r := lipgloss.NewRenderer(out)
	v := &termView{textView: tv, out: out, renderer: r, styles: newLiveStyles(r), now: now}
	// The log (warnings, --log-level debug) shares the screen when stderr
	// is the same terminal: route it through the live program while one
	// runs, so its lines land above the live area instead of across it.
	if f, ok := asFile(g.stderr); ok && term.IsTerminal(int(f.Fd())) {
		v.logs = &lineWriter{w: g.stderr}
		profile := lipgloss.NewRenderer(g.stderr).ColorProfile()
		g.log.SetOutput(v.logs)
		g.log.SetColorProfile(profile)
	}
	return v
}

// Stage updates the live area; a finished stage is printed above it with
// the same words as the text view's line.
func (v *termView) Stage(ev provision.StageEvent) {
	v.start()
	v.send(stageMsg(ev))
	if !ev.Done {
		return
	}
	mark := v.styles.ok.Render("✓")
	if ev.Err != nil {
		mark = v.styles.failed.Render("✗")
	}
	v.println(mark + " " + stageLine(ev))
}

// Step updates the live area. A failed host is printed above it at once,
// since the hosts beside it may go on for a while; each change goes to the
// debug log (the summary counts them).
func (v *termView) Step(ev provision.StepEvent) {
	v.send(stepMsg(ev))
	switch {
	case ev.Done && ev.Err != nil:
		msg, _, _ := strings.Cut(ev.Err.Error(), "\n")
		v.println("  " + v.styles.failed.Render("✗ "+ev.Host) + ": " + ev.Step.String() + ": " + msg)
	case ev.Done && ev.Changed:
		v.g.log.Debug("changed", "host", ev.Host, "step", ev.Step.String())
	}
}

// start starts the live program unless it runs already.
func (v *termView) start() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.prog != nil || v.over {
		return
	}
	v.prog = tea.NewProgram(newLiveModel(v.renderer, v.now),
		tea.WithOutput(v.out), tea.WithInput(nil), tea.WithoutSignalHandler(), tea.WithoutBracketedPaste())
	v.done = make(chan struct{})
	// The log goes through the program from its start: a line written
	// straight to the terminal while the program draws would move the
	// cursor under it.
	if v.logs != nil {
		v.logs.attach(v.prog)
	}
	go func(p *tea.Program, done chan struct{}) {
		defer close(done)
		// An error here means the live area could not be drawn; the run
		// goes on, and the summary and the exit code still tell the outcome.
		_, _ = p.Run()
	}(v.prog, v.done)
}

// send passes a message to the live program, if one runs. Program.Send
// returns at once once the program has stopped, so this never blocks on a
// program that is gone.
func (v *termView) send(msg tea.Msg) {
	v.mu.Lock()
	p := v.prog
	v.mu.Unlock()
	if p != nil {
		p.Send(msg)
	}
}

// println prints a line above the live area (or plainly when none runs).
func (v *termView) println(line string) {
	v.mu.Lock()
	p := v.prog
	v.mu.Unlock()
	if p == nil {
		io.WriteString(v.out, line+"\n")
		return
	}
	p.Send(printLine(line))
}

// printLine is bubbletea's message for a line printed above the program.
// Sent with Program.Send (not Program.Println), it keeps its place among
// the other messages and is dropped rather than blocking once the program
// has stopped.
//
// The line starts by erasing the screen below: bubbletea prints a line over
// the live area's old rows and erases the rest of its row only when the
// line is narrower than the terminal. A wider line wraps onto the next row,
// and whatever the live area drew there (its progress bar, a host's step)
// stayed after the line's end, joined to it. The erase leaves the line
// whole, wrapped as the terminal wraps it; the live area is drawn again
// under the printed lines anyway.
func printLine(s string) tea.Msg { return tea.Println(ansi.EraseScreenBelow + s)() }

// finish erases the live area and stops the program, after every line sent
// before it has been printed; later output is plain.
func (v *termView) finish() {
	v.mu.Lock()
	p, done := v.prog, v.done
	v.prog, v.over = nil, true
	v.mu.Unlock()
	if p == nil {
		return
	}
	if v.logs != nil {
		v.logs.detach()
	}
	p.Send(finishMsg{})
	<-done
}

// report ends the live area, then prints the summary tables as text.
func (v *termView) report(rep *provision.Report, took time.Duration) {
	v.finish()
	v.textView.report(rep, took)
}

// lineWriter is the log's output on a terminal: while a live program runs,
// each complete line goes to it to be printed above the live area;
// otherwise lines go straight to w.
type lineWriter struct {
	mu      sync.Mutex
	w       io.Writer
	prog    *tea.Program
	pending []byte
}

func (lw *lineWriter) Write(b []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.prog == nil {
		return lw.w.Write(b)
	}
	lw.pending = append(lw.pending, b...)
	for {
		i := bytes.IndexByte(lw.pending, '\n')
		if i < 0 {
			return len(b), nil
		}
		lw.prog.Send(printLine(string(lw.pending[:i])))
		lw.pending = lw.pending[i+1:]
	}
}

func (lw *lineWriter) attach(p *tea.Program) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.prog = p
}

// detach sends what is left of a line to the program and writes plainly
// from then on.
func (lw *lineWriter) detach() {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if len(lw.pending) > 0 {
		lw.prog.Send(printLine(string(lw.pending)))
		lw.pending = nil
	}
	lw.prog = nil
}
