package main

import (
	"context"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

type cellKind int

const (
	cellNone    cellKind = iota // not measured (system or step not selected)
	cellOK                      // measured
	cellError                   // the step failed or gave a wrong result
	cellTimeout                 // the step took longer than -step-timeout
	cellSkipped                 // not run because of an earlier failure
	cellNA                      // the system is not installed
	cellDash                    // does not apply
	cellCapped                  // stopped at the system's per-step cap (-sshfs-cap): not a failure
)

type cell struct {
	kind cellKind
	d    time.Duration // total, or median for saves
	rate float64       // rate rows (bigread, bulk): the value in unit
	unit string        // "MB/s", "files/s"; "" for a duration
	note string        // detail: counts, spread, error message
	// bound: a capped cell whose d (and rate, for rate rows) bounds the
	// row's real value, so the ratio column can say "> N x".
	bound bool
}

func (c cell) logString() string {
	switch c.kind {
	case cellOK:
		s := fmtDur(c.d)
		if c.unit != "" {
			s = fmtRate(c.rate, c.unit)
		}
		if c.note != "" {
			s += "  (" + c.note + ")"
		}
		return s
	case cellError:
		return "ERROR: " + c.note
	}
	return cellText(c, "")
}

func cellText(c cell, row string) string {
	switch c.kind {
	case cellOK:
		if c.unit != "" {
			return fmtRate(c.rate, c.unit)
		}
		return fmtDur(c.d)
	case cellError:
		return "error"
	case cellTimeout:
		return "timeout"
	case cellSkipped:
		return "skipped"
	case cellNA:
		return "n/a"
	case cellCapped:
		return "> " + fmtDur(c.d)
	}
	return "—"
}

// report is the table being filled.
type report struct {
	cfg    *config
	mu     sync.Mutex
	header []string
	labels map[string]string
	cells  map[string]map[string]cell // row -> column ("remotefs/cold") -> cell
	notes  []string
	// problems are failures outside the cells (conflicts nobody caused,
	// upload errors, mounts left behind).
	problems []string
}

func newReport(cfg *config) *report {
	r := &report{cfg: cfg, cells: map[string]map[string]cell{}, labels: map[string]string{}}
	r.labels = map[string]string{
		"mount":      "mount",
		"walk":       "walk: lstat every entry",
		"git":        "git status",
		"grep":       "grep -r over the .py files",
		"save":       fmt.Sprintf("save (in place), median of %d", cfg.saves),
		"savevis":    "save: close to on-server, median",
		"safesave":   fmt.Sprintf("safe-save (tmp+fsync+rename), median of %d", cfg.saves),
		"safevis":    "safe-save: close to on-server, median",
		"bigread":    "bigread " + fmtSize(cfg.bigfile) + ", MB/s",
		"freshgit":   "git status, first on a fresh mount (empty cache)",
		"freshwalk":  "walk, fresh mount (empty cache, agent on the server): + mount",
		"remountgit": "git status, first after a remount (cache kept)",
		"bulk":       fmt.Sprintf("bulk write: tar -x %d files, files/s", cfg.bulk),
		"bulkrm":     fmt.Sprintf("bulk delete: rm -rf the %d files, files/s", cfg.bulk),
		"format":     "format: read + rewrite every .py",
		"formatgit":  "git status after the rewrite",
		"capread":    fmt.Sprintf("read %s at a %s cap, MB/s", fmtSize(cfg.bigfile), fmtRate(float64(cfg.capRate)/1e6, "MB/s")),
	}
	return r
}

// rows in table order, for the selected steps.
func (r *report) rows() []string {
	out := []string{"mount"}
	for _, s := range r.cfg.steps {
		out = append(out, stepRows(s)...)
	}
	return out
}

func (r *report) set(row, col string, c cell) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cells[row] == nil {
		r.cells[row] = map[string]cell{}
	}
	r.cells[row][col] = c
}

func (r *report) get(row, col string) cell {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cells[row][col]
}

func (r *report) notef(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

func (r *report) problemf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

// markAll fills every cell of sys with c.
func (r *report) markAll(sys string, c cell) {
	for _, row := range r.rows() {
		for _, pass := range []string{"cold", "warm"} {
			cc := c
			if row == "mount" && pass == "warm" {
				cc = cell{kind: cellDash}
			}
			r.set(row, sys+"/"+pass, cc)
		}
	}
}

// markRest marks the cells of sys not filled yet as skipped.
func (r *report) markRest(sys string) {
	for _, row := range r.rows() {
		for _, pass := range []string{"cold", "warm"} {
			col := sys + "/" + pass
			if r.get(row, col).kind != cellNone {
				continue
			}
			if row == "mount" && pass == "warm" {
				r.set(row, col, cell{kind: cellDash})
			} else {
				r.set(row, col, cell{kind: cellSkipped})
			}
		}
	}
}

// failed reports whether any cell is an error or a timeout, or anything
// else went wrong.
func (r *report) failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.problems) > 0 {
		return true
	}
	for _, cols := range r.cells {
		for _, c := range cols {
			if c.kind == cellError || c.kind == cellTimeout {
				return true
			}
		}
	}
	return false
}

// describe fills the header: machine, software, link, server, workload.
func (r *report) describe(b *bench, entries, objects int, gst gitStats, execT, sftpT time.Duration) {
	cfg := r.cfg
	cpu, mem, kernel := machineInfo()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rfVersion := "?"
	if out, err := exec.CommandContext(ctx, b.bin, "version").Output(); err == nil {
		rfVersion = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "remotefs "))
	}
	sshfsVersion := "not installed"
	if _, err := exec.LookPath("sshfs"); err == nil {
		out, _ := exec.CommandContext(ctx, "sshfs", "--version").CombinedOutput()
		var parts []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "SSHFS version") || strings.HasPrefix(l, "FUSE library version") {
				parts = append(parts, strings.TrimSpace(l))
			}
		}
		sshfsVersion = strings.Join(parts, ", ")
	}
	bw := "unlimited"
	if cfg.bandwidth > 0 {
		bw = fmt.Sprintf("%s/s each way (%.0f Mbit/s)", fmtSize(cfg.bandwidth), float64(cfg.bandwidth)*8/1e6)
	}
	p := b.proj
	login := fmt.Sprintf("server login shell: instant (exec channel runs `true` in %s, SFTP subsystem answers in %s)", fmtDur(execT), fmtDur(sftpT))
	if cfg.slowLogin > 0 {
		login = fmt.Sprintf("server login shell: slow, ~/.bashrc sleeps %v as a conda/pyenv init does (exec channel runs `true` in %s; SFTP subsystem, internal-sftp, answers in %s)", cfg.slowLogin, fmtDur(execT), fmtDur(sftpT))
	}
	proj := fmt.Sprintf("project: %d files (%d .py) in %d folders, %s, one git commit (%d loose objects); %d entries with .git",
		len(p.files), len(p.pyFiles), len(p.dirs), fmtSize(p.bytes), objects, entries)
	if p.real != nil {
		proj = p.real.describe(gst, len(p.pyFiles)) + fmt.Sprintf("; %d entries with .git", entries)
	}
	r.header = []string{
		"date: " + time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		fmt.Sprintf("machine: %s, %d cores, %s, %s", cpu, runtime.NumCPU(), mem, kernel),
		fmt.Sprintf("software: %s %s/%s; remotefs %s; %s; %s", runtime.Version(), runtime.GOOS, runtime.GOARCH, rfVersion, sshfsVersion, firstLine("ssh", "-V")),
		fmt.Sprintf("link: OpenSSH sshd on loopback behind a latency proxy, rtt %v (%v each way), bandwidth %s", cfg.rtt, cfg.rtt/2, bw),
		login,
		proj,
		fmt.Sprintf("big file: %s of incompressible data; saves: %d per step", fmtSize(cfg.bigfile), cfg.saves),
	}
	r.labels["walk"] = fmt.Sprintf("walk: lstat all %d entries", entries)
	r.labels["grep"] = fmt.Sprintf("grep -r over %d .py files", len(p.pyFiles))
	r.labels["format"] = fmt.Sprintf("format: read + rewrite all %d .py files", len(p.pyFiles))
}

var columns = []struct{ key, title string }{
	{"remotefs/cold", "remotefs cold"},
	{"sshfs/cold", "sshfs cold"},
	{"ratio/cold", "ratio"},
	{"remotefs/warm", "remotefs warm"},
	{"sshfs/warm", "sshfs warm"},
	{"ratio/warm", "ratio"},
	{"local/warm", "local"},
}

func (r *report) label(row string) string {
	l := r.labels[row]
	if len(r.cfg.steps) > 0 && row == r.cfg.steps[0] && addsMount(row) {
		l += " (cold: + mount)"
	}
	return l
}

func (r *report) text(row, col string) string {
	switch {
	case strings.HasPrefix(col, "ratio/"):
		return r.ratio(row, strings.TrimPrefix(col, "ratio/"))
	case row == "mount" && (col == "local/warm" || strings.HasSuffix(col, "/warm")):
		return "—"
	case (row == "freshgit" || row == "freshwalk") && col == "local/warm":
		col = "local/cold" // a first git status has no second pass
	}
	return cellText(r.get(row, col), row)
}

// ratio is how many times faster remotefs is than sshfs; "> N x" when
// sshfs was stopped at its cap.
func (r *report) ratio(row, pass string) string {
	rf, ss := r.get(row, "remotefs/"+pass), r.get(row, "sshfs/"+pass)
	if ss.kind == cellNA {
		return "n/a"
	}
	prefix := ""
	if ss.kind == cellCapped && ss.bound {
		ss.kind, prefix = cellOK, "> "
	}
	if rf.kind != cellOK || ss.kind != cellOK || rf.unit != ss.unit {
		return "—"
	}
	var x float64
	if rf.unit != "" {
		if ss.rate <= 0 {
			return "—"
		}
		x = rf.rate / ss.rate
	} else {
		if rf.d <= 0 {
			return "—"
		}
		x = float64(ss.d) / float64(rf.d)
	}
	return prefix + fmtRatio(x)
}

func fmtRatio(x float64) string {
	switch {
	case x >= 100:
		return fmt.Sprintf("%.0fx", x)
	case x >= 1:
		return fmt.Sprintf("%.1fx", x)
	case x >= 0.01:
		return fmt.Sprintf("%.2fx", x)
	}
	return fmt.Sprintf("%.1gx", x)
}

// anyCapped reports whether a cell was stopped at a cap.
func (r *report) anyCapped() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, cols := range r.cells {
		for _, c := range cols {
			if c.kind == cellCapped {
				return true
			}
		}
	}
	return false
}

// render is the whole report as Markdown (aligned, so it reads as text).
func (r *report) render() string {
	var sb strings.Builder
	sb.WriteString("# remotefs benchmark\n\n")
	for _, h := range r.header {
		sb.WriteString("- " + h + "\n")
	}
	if len(r.header) > 0 {
		sb.WriteString("\n")
	}
	if len(r.header) > 0 {
		table := [][]string{{"step"}}
		for _, c := range columns {
			table[0] = append(table[0], c.title)
		}
		for _, row := range r.rows() {
			line := []string{r.label(row)}
			for _, c := range columns {
				line = append(line, r.text(row, c.key))
			}
			table = append(table, line)
		}
		widths := make([]int, len(table[0]))
		for _, line := range table {
			for i, s := range line {
				widths[i] = max(widths[i], utf8.RuneCountInString(s))
			}
		}
		pad := func(s string, w int, right bool) string {
			n := w - utf8.RuneCountInString(s)
			if right {
				return strings.Repeat(" ", n) + s
			}
			return s + strings.Repeat(" ", n)
		}
		for li, line := range table {
			sb.WriteString("|")
			for i, s := range line {
				sb.WriteString(" " + pad(s, widths[i], i > 0 && li > 0) + " |")
			}
			sb.WriteString("\n")
			if li == 0 {
				sb.WriteString("|")
				for i, w := range widths {
					if i == 0 {
						sb.WriteString(" " + strings.Repeat("-", w) + " |")
					} else {
						sb.WriteString(" " + strings.Repeat("-", w-1) + ": |")
					}
				}
				sb.WriteString("\n")
			}
		}
		sb.WriteString("\n")
		sb.WriteString("Cold: fresh mount, empty remotefs cache; the mount time is counted in the first step. Warm: the same steps again on the same mount.\n")
		sb.WriteString("Ratio: how many times faster remotefs is than sshfs (sshfs time / remotefs time; for bigread remotefs MB/s / sshfs MB/s); below 1 means remotefs is slower.\n")
		sb.WriteString("Local: the same steps on the server directory itself (second pass; the first pass for a first git status). Saves: time from open to close; \"close to on-server\": from close until the server file holds the new content. sshfs runs with its default options.\n")
		if r.anyCapped() {
			sb.WriteString(fmt.Sprintf("\"> %s\": sshfs was stopped after %s, its per-step cap (-sshfs-cap; not a failure): the step's rows not finished by then say so, and the ratio \"> N x\" is a bound (remotefs at least N times faster) given for a step's first row only; what the stopped step left on the server was repaired and the mount replaced where needed (see Details).\n", fmtDur(r.cfg.sshfsCap), fmtDur(r.cfg.sshfsCap)))
		}
		if r.cfg.repo != "small" {
			sb.WriteString("Fresh mount / remount git status: a second mount made for the step, with an empty cache / with the cache the previous second mount left (in the warm pass the server has changed since: format, saves); the main mount stays up. Fresh-mount walk: the same second mount with an empty cache, timed from the mount command to the end of the walk; the server still runs the agent the main mount started (the first walk is the server's first connection ever, which also installs the agent). Bulk: tar -x of an archive into the project, then rm -rf, in files per second of the command's run time. Format: every tracked .py read and written back with trailing whitespace stripped. Capped read: another big file, with the link limited to the cap.\n")
		}
	}

	var details, errs []string
	for _, row := range r.rows() {
		var parts []string
		for _, col := range []string{"remotefs/cold", "sshfs/cold", "local/cold", "remotefs/warm", "sshfs/warm", "local/warm"} {
			c := r.get(row, col)
			switch c.kind {
			case cellOK:
				if c.note != "" {
					parts = append(parts, strings.Replace(col, "/", " ", 1)+": "+c.note)
				}
			case cellError, cellTimeout:
				errs = append(errs, fmt.Sprintf("%s, %s: %s: %s", r.labels[row], strings.Replace(col, "/", " ", 1), cellText(c, row), c.note))
			}
		}
		if len(parts) > 0 {
			details = append(details, r.labels[row]+" — "+strings.Join(parts, "; "))
		}
	}
	r.mu.Lock()
	errs = append(errs, r.problems...)
	r.mu.Unlock()
	if len(errs) > 0 {
		sb.WriteString("\nProblems:\n\n")
		for _, e := range errs {
			sb.WriteString("- " + e + "\n")
		}
	}
	r.mu.Lock()
	notes := append([]string(nil), r.notes...)
	r.mu.Unlock()
	if len(details)+len(notes) > 0 {
		sb.WriteString("\nDetails:\n\n")
		for _, d := range details {
			sb.WriteString("- " + d + "\n")
		}
		for _, n := range notes {
			sb.WriteString("- " + n + "\n")
		}
	}
	return sb.String()
}

func fmtDur(d time.Duration) string {
	s := d.Seconds()
	switch {
	case d <= 0:
		return "0"
	case s >= 100:
		return fmt.Sprintf("%.0f s", s)
	case s >= 10:
		return fmt.Sprintf("%.1f s", s)
	case s >= 1:
		return fmt.Sprintf("%.2f s", s)
	case s >= 0.1:
		return fmt.Sprintf("%.0f ms", s*1e3)
	case s >= 0.01:
		return fmt.Sprintf("%.1f ms", s*1e3)
	}
	return fmt.Sprintf("%.2f ms", s*1e3)
}

func fmtRate(v float64, unit string) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f %s", v, unit)
	case v >= 10:
		return fmt.Sprintf("%.1f %s", v, unit)
	}
	return fmt.Sprintf("%.2f %s", v, unit)
}

func fmtSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
