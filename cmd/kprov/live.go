package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/progress"
	"github.com/charmbracelet/bubbles/spinner"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/kprov/kprov/provision"
	"github.com/kprov/kprov/provision/plan"
)

// liveModel is the live area a terminal shows under apply's output: the
// stage running with a progress bar (hosts done of hosts, steps done of
// steps), one line per host still working with its current step and how
// long that step has run, and how many hosts wait for a free slot. A host
// folds away when its last step ends. What is done is printed above the
// live area by termView, so the area itself only ever shows the present,
// and renders nothing once the run is over.
type liveModel struct {
	now     func() time.Time
	styles  liveStyles
	spinner spinner.Model
	bar     progress.Model
	width   int // of the terminal; 0 until known
	height  int

	stage        *plan.Stage // nil between stages
	index, total int
	hosts        []string       // the stage's hosts, in first-step order
	steps        map[string]int // each host's steps in the stage
	started      map[string]int // each host's steps started so far
	busy         map[string]*hostWork
	doneHosts    int
	failedHosts  int
	doneSteps    int
	over         bool // the run has ended: render nothing
}

// hostWork is what one busy host is doing.
type hostWork struct {
	step  plan.Step
	index int // of the step among the host's steps in the stage, from 1
	since time.Time
}

// liveStyles are the few styles the live area and its printed lines use,
// from the output's own renderer so colour follows that terminal (and
// NO_COLOR).
type liveStyles struct {
	host, faint, ok, failed lipgloss.Style
}

func newLiveStyles(r *lipgloss.Renderer) liveStyles {
	return liveStyles{
		host:   r.NewStyle().Bold(true),
		faint:  r.NewStyle().Faint(true),
		ok:     r.NewStyle().Foreground(lipgloss.Color("2")),
		failed: r.NewStyle().Foreground(lipgloss.Color("1")).Bold(true),
	}
}

// Messages termView sends the live program.
type (
	stageMsg  provision.StageEvent
	stepMsg   provision.StepEvent
	finishMsg struct{}
)

func newLiveModel(r *lipgloss.Renderer, now func() time.Time) liveModel {
	return liveModel{
		now:     now,
		styles:  newLiveStyles(r),
		spinner: spinner.New(spinner.WithSpinner(spinner.MiniDot)),
		bar:     progress.New(progress.WithSolidFill("6"), progress.WithoutPercentage(), progress.WithColorProfile(r.ColorProfile())),
	}
}

// Init starts the spinner, whose ticks also refresh the elapsed times.
func (m liveModel) Init() tea.Cmd { return m.spinner.Tick }

// Update follows the run's events.
func (m liveModel) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case spinner.TickMsg:
		var cmd tea.Cmd
		m.spinner, cmd = m.spinner.Update(msg)
		return m, cmd
	case stageMsg:
		if msg.Done {
			m.stage = nil
			break
		}
		m.startStage(msg)
	case stepMsg:
		m.step(provision.StepEvent(msg))
	case finishMsg:
		m.over = true
		return m, tea.Quit
	}
	return m, nil
}

func (m *liveModel) startStage(ev stageMsg) {
	m.stage, m.index, m.total = ev.Stage, ev.Index, ev.Total
	m.hosts = ev.Stage.Hosts()
	m.steps, m.started, m.busy = map[string]int{}, map[string]int{}, map[string]*hostWork{}
	for _, s := range ev.Stage.Steps {
		m.steps[s.Host]++
	}
	m.doneHosts, m.failedHosts, m.doneSteps = 0, 0, 0
}

func (m *liveModel) step(ev provision.StepEvent) {
	if m.stage == nil || ev.Stage != m.stage {
		return
	}
	switch {
	case !ev.Done:
		m.started[ev.Host]++
		m.busy[ev.Host] = &hostWork{step: ev.Step, index: m.started[ev.Host], since: m.now()}
	case ev.Err != nil:
		// A failed host stops there; termView prints why above.
		delete(m.busy, ev.Host)
		m.failedHosts++
	default:
		m.doneSteps++
		if m.started[ev.Host] >= m.steps[ev.Host] {
			delete(m.busy, ev.Host)
			m.doneHosts++
		}
	}
}

// View draws the live area: nothing between stages and after the run, and
// nothing until the terminal's width is known: bubbletea cuts the area's
// lines to that width, and a line it could not cut would wrap, leaving a
// row behind that its cursor arithmetic does not count.
func (m liveModel) View() string {
	if m.over || m.stage == nil || m.width == 0 {
		return ""
	}
	st := m.stage
	var b strings.Builder
	fmt.Fprintf(&b, "%s[%s] %s %s\n", m.spinner.View()+" ", stageTag(st), st.Title,
		m.styles.faint.Render(fmt.Sprintf("(stage %d of %d)", m.index, m.total)))

	total := len(st.Steps)
	bar := m.bar
	bar.Width = max(10, min(40, m.width-40))
	counts := fmt.Sprintf("%d/%d hosts  %d/%d steps", m.doneHosts, len(m.hosts), m.doneSteps, total)
	if m.failedHosts > 0 {
		counts += m.styles.failed.Render(fmt.Sprintf("  %d failed", m.failedHosts))
	}
	fmt.Fprintf(&b, "  %s  %s\n", bar.ViewAs(float64(m.doneSteps)/float64(max(total, 1))), counts)

	// One line per busy host, in the stage's order, as many as fit.
	busy := make([]string, 0, len(m.busy))
	for _, h := range m.hosts {
		if _, ok := m.busy[h]; ok {
			busy = append(busy, h)
		}
	}
	room := len(busy)
	if m.height > 0 {
		room = min(room, max(1, m.height-4))
	}
	nameWidth := 0
	for _, h := range busy[:room] {
		nameWidth = max(nameWidth, len(h))
	}
	now := m.now()
	for _, h := range busy[:room] {
		w := m.busy[h]
		fmt.Fprintf(&b, "  %s  %s  %s\n", m.styles.host.Render(fmt.Sprintf("%-*s", nameWidth, h)), w.step.String(),
			m.styles.faint.Render(fmt.Sprintf("(step %d/%d, %s)", w.index, m.steps[h], elapsed(now.Sub(w.since)))))
	}
	waiting := len(m.hosts) - m.doneHosts - m.failedHosts - len(busy)
	var more []string
	if n := len(busy) - room; n > 0 {
		more = append(more, fmt.Sprintf("%d more busy", n))
	}
	if waiting > 0 {
		more = append(more, fmt.Sprintf("%d waiting", waiting))
	}
	if len(more) > 0 {
		fmt.Fprintf(&b, "  %s\n", m.styles.faint.Render(strings.Join(more, ", ")))
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// elapsed is a duration as a person reads it at a glance: 0s, 12s, 3m05s.
func elapsed(d time.Duration) string {
	d = d.Truncate(time.Second)
	if d < time.Minute {
		return fmt.Sprintf("%ds", int(d.Seconds()))
	}
	return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
}
