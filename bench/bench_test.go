package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"remotefs/internal/mountinfo"
	"remotefs/internal/sshdtest"
	"remotefs/internal/testenv"
)

// logWriter sends progress lines to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestQuickBench runs the whole benchmark in a tiny configuration of the
// realistic repository, with every step and a slow login shell, and checks
// the table is complete and has no failed cells. It asserts no timing:
// only that every system got through every step with the right results
// (the steps themselves check walk entries, git status output, grep hits,
// extracted and deleted files, rewritten and saved content on the server
// and the big files' bytes). remountgit's warm pass checks that a remount
// with the cache kept shows what the format step changed on the server
// meanwhile.
func TestQuickBench(t *testing.T) {
	runQuickBench(t, []string{"-repo", "3k", "-quick", "-files", "150", "-history", "3MiB", "-slow-login", "300ms",
		"-rtt", "4ms", "-saves", "3", "-bulk", "60", "-bigfile", "2MiB", "-step-timeout", "90s", "-steps", strings.Join(allSteps, ",")},
		[]string{"mount", "walk: lstat all", "git status", "grep -r over", "git status, first on a fresh mount",
			"walk, fresh mount (empty cache, agent on the server)", "git status, first after a remount (cache kept)",
			"bulk write: tar -x 60 files", "bulk delete: rm -rf the 60 files", "format: read + rewrite all", "git status after the rewrite",
			"save (in place), median of 3", "save: close to on-server", "safe-save (tmp+fsync+rename), median of 3",
			"safe-save: close to on-server", "bigread 2 MiB", "read 2 MiB at a 20.0 MB/s cap"})
}

// TestQuickBenchSmall runs the small synthetic project with its default
// steps on the local disk only: the part the realistic run does not cover
// (generating and restoring the small project).
func TestQuickBenchSmall(t *testing.T) {
	runQuickBench(t, []string{"-quick", "-only", "local", "-files", "40", "-saves", "3", "-bigfile", "2MiB", "-step-timeout", "90s"},
		[]string{"mount", "walk: lstat all", "git status", "grep -r over",
			"save (in place), median of 3", "save: close to on-server", "safe-save (tmp+fsync+rename), median of 3",
			"safe-save: close to on-server", "bigread 2 MiB"})
}

func runQuickBench(t *testing.T, args []string, wantRows []string) {
	if testing.Short() {
		t.Skip("runs sshd, FUSE mounts and sshfs (about a minute)")
	}
	sshdtest.Require(t)
	testenv.RequireFUSE(t)
	_, errSSHFS := exec.LookPath("sshfs")

	cfg, err := parseFlags(args)
	if err != nil {
		t.Fatal(err)
	}
	rep, text := runChecked(t, cfg)

	// Parse the table.
	var header []string
	rows := map[string][]string{}
	var order []string
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, "|") {
			continue
		}
		var cells []string
		for _, c := range strings.Split(strings.Trim(line, "|"), "|") {
			cells = append(cells, strings.TrimSpace(c))
		}
		switch {
		case header == nil:
			header = cells
		case strings.HasPrefix(cells[0], "---"):
		default:
			rows[cells[0]] = cells[1:]
			order = append(order, cells[0])
		}
	}
	wantHeader := []string{"step", "remotefs cold", "sshfs cold", "ratio", "remotefs warm", "sshfs warm", "ratio", "local"}
	if strings.Join(header, "|") != strings.Join(wantHeader, "|") {
		t.Fatalf("table header %q, want %q", header, wantHeader)
	}
	if len(order) != len(wantRows) {
		t.Errorf("table has %d rows, want %d: %q", len(order), len(wantRows), order)
	}
	selected := func(col string) bool {
		for _, sys := range cfg.only {
			if strings.HasPrefix(col, sys) {
				return true
			}
		}
		return col == "ratio" && slices.Contains(cfg.only, "remotefs") && slices.Contains(cfg.only, "sshfs")
	}
	var prevCells []string
	for i, prefix := range wantRows {
		if i >= len(order) || !strings.HasPrefix(order[i], prefix) {
			t.Errorf("row %d should start with %q; rows: %q", i, prefix, order)
			continue
		}
		cells := rows[order[i]]
		rowBad := false
		for _, c := range cells {
			rowBad = rowBad || c == "error" || c == "timeout" || c == "skipped"
		}
		for j, c := range cells {
			col := header[j+1]
			switch {
			case c == "error" || c == "timeout" || c == "skipped":
				t.Errorf("%s / %s: %s", order[i], col, c)
			case c == "n/a":
				if !strings.HasPrefix(col, "sshfs") && col != "ratio" || errSSHFS == nil {
					t.Errorf("%s / %s: n/a although sshfs is installed", order[i], col)
				}
			case c == "—":
				// Allowed only where nothing applies: systems not measured,
				// warm and local mount times, close-to-server for the local
				// disk, a first git status's warm pass, ratios of those.
				mountRow := prefix == "mount" && (col != "remotefs cold" && col != "sshfs cold")
				localVis := strings.Contains(prefix, "close to on-server") && col == "local"
				firstGitWarm := (strings.Contains(prefix, "first on a fresh mount") || strings.HasPrefix(prefix, "walk, fresh mount")) && j >= 3 && j <= 5
				ratioOfBad := col == "ratio" && rowBad
				// A close-to-server cell is empty when its save failed.
				failedSave := strings.Contains(prefix, "close to on-server") && prevCells != nil &&
					(prevCells[j] == "error" || prevCells[j] == "timeout" || prevCells[j] == "skipped")
				if selected(col) && !mountRow && !localVis && !firstGitWarm && !ratioOfBad && !failedSave {
					t.Errorf("%s / %s: empty cell", order[i], col)
				}
			case c == "":
				t.Errorf("%s / %s: blank cell", order[i], col)
			case !selected(col):
				t.Errorf("%s / %s: %q for a system not measured", order[i], col, c)
			}
		}
		prevCells = cells
	}
	if rep.failed() {
		t.Errorf("the report lists problems (see Problems above)")
	}
}

// runChecked runs the benchmark, logs its report, and fails the test when
// the run returns an error or leaves a mount of its own behind (other
// benchmarks may run beside it).
func runChecked(t *testing.T, cfg *config) (*report, string) {
	t.Helper()
	cfg.progress = logWriter{t}
	var work string
	before := cfg.hooks.beforeStep
	cfg.hooks.beforeStep = func(b *bench, sys, pass, step string) {
		work = b.work
		if before != nil {
			before(b, sys, pass, step)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := run(ctx, cfg)
	if rep == nil {
		t.Fatalf("no report: %v", err)
	}
	text := rep.render()
	t.Logf("report:\n%s", text)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if mounted := mountsUnder(work, "mnt-"); work == "" || len(mounted) > 0 {
		t.Errorf("mounts left behind under %q: %v", work, mounted)
	}
	return rep, text
}

// mountsUnder lists mount points whose path starts with dir/prefix.
func mountsUnder(dir, prefix string) []string {
	all, _ := mountinfo.Read()
	var out []string
	for _, m := range all {
		if strings.HasPrefix(m.Point, strings.TrimRight(dir, "/")+"/"+prefix) {
			out = append(out, m.Point)
		}
	}
	return out
}

func TestParseHelpers(t *testing.T) {
	for in, want := range map[string]int64{"256MiB": 256 << 20, "4M": 4e6, "1.5GiB": 3 << 29, "1024": 1024, "2KiB": 2048} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, want := range map[string]int64{"0": 0, "10MB": 10e6, "100mbit": 12.5e6, "2MiB/s": 2 << 20} {
		if got, err := parseRate(in); err != nil || got != want {
			t.Errorf("parseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := parseFlags([]string{"-only", "nfs"}); err == nil {
		t.Error("-only nfs accepted")
	}
	cfg, err := parseFlags([]string{"-quick", "-files", "100"})
	if err != nil || cfg.files != 100 || cfg.rtt != 10*time.Millisecond || cfg.saves != 5 {
		t.Errorf("-quick -files 100: %+v, %v", cfg, err)
	}
	// The realistic repositories: presets, -quick scaling, explicit flags,
	// and their default steps.
	if cfg, err := parseFlags(nil); err != nil || !slices.Equal(cfg.steps, smallSteps) || cfg.repo != "small" {
		t.Errorf("defaults: %+v, %v", cfg, err)
	}
	cfg, err = parseFlags([]string{"-repo", "30k", "-slow-login", "1s"})
	if err != nil || cfg.shape.tracked != 15000 || cfg.shape.history != 160<<20 || !slices.Equal(cfg.steps, allSteps) ||
		cfg.slowLogin != time.Second || cfg.bulk != 500 || cfg.capRate != 20e6 {
		t.Errorf("-repo 30k -slow-login 1s: %+v, %v", cfg, err)
	}
	cfg, err = parseFlags([]string{"-repo", "3k", "-quick", "-seed", "9"})
	if err != nil || cfg.shape.tracked != 300 || cfg.shape.history != 8<<20 || cfg.shape.seed != 9 || cfg.bulk != 100 {
		t.Errorf("-repo 3k -quick: %+v, %v", cfg, err)
	}
	cfg, err = parseFlags([]string{"-repo", "3k", "-quick", "-files", "1000", "-history", "40MiB", "-steps", "bulk,walk"})
	if err != nil || cfg.shape.tracked != 1000 || cfg.shape.history != 40<<20 || !slices.Equal(cfg.steps, []string{"walk", "bulk"}) {
		t.Errorf("-repo 3k -quick -files 1000 -history 40MiB: %+v, %v", cfg, err)
	}
	// sshfs's per-step cap: on by default for the realistic repositories.
	for _, tc := range []struct {
		args []string
		want time.Duration
	}{
		{nil, 0}, {[]string{"-repo", "3k"}, defaultSSHFSCap}, {[]string{"-repo", "30k", "-sshfs-cap", "90s"}, 90 * time.Second},
		{[]string{"-repo", "3k", "-sshfs-cap", "0"}, 0}, {[]string{"-sshfs-cap", "5s"}, 5 * time.Second},
	} {
		if cfg, err := parseFlags(tc.args); err != nil || cfg.sshfsCap != tc.want {
			t.Errorf("%q: -sshfs-cap %v, %v; want %v", tc.args, cfg.sshfsCap, err, tc.want)
		}
	}
	for _, bad := range [][]string{{"-sshfs-cap", "-1s"}, {"-repo", "5k"}, {"-history", "10MiB"}, {"-repo", "3k", "-history", "1k"}, {"-cap", "0"}, {"-slow-login", "-1s"}, {"-bulk", "0"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}

	// The project is deterministic and shaped as promised.
	p1, p2 := generateProject(600), generateProject(600)
	if len(p1.files) != 600 || len(p1.dirs) != 40 {
		t.Errorf("600-file project: %d files, %d folders", len(p1.files), len(p1.dirs))
	}
	for i := range p1.files {
		if p1.files[i].path != p2.files[i].path || string(p1.files[i].data) != string(p2.files[i].data) {
			t.Fatalf("project not deterministic at %s", p1.files[i].path)
		}
		if n := len(p1.files[i].data); strings.HasSuffix(p1.files[i].path, ".py") && (n < 200 || n > 20000) {
			t.Errorf("%s: %d bytes, want 200..20000", p1.files[i].path, n)
		}
	}
	if p1.grepHits == 0 {
		t.Error("no grep hits in the project")
	}
}

// TestCappedCells checks how a step stopped at sshfs's cap reads in the
// table: "> cap" in its cells, a "> N x" ratio from the bound where the
// bound is honest (a step's first row) and "—" where it is not, a legend,
// and no failure.
func TestCappedCells(t *testing.T) {
	cfg, err := parseFlags([]string{"-repo", "3k", "-steps", "git,bulk", "-bulk", "300"})
	if err != nil {
		t.Fatal(err)
	}
	b := &bench{cfg: cfg, rep: newReport(cfg), bulk: &bulkSet{files: map[string][]byte{}}}
	for i := range 300 {
		b.bulk.files[fmt.Sprint(i)] = nil
	}
	rep := b.rep
	rep.header = []string{"test"}
	rep.set("git", "remotefs/cold", cell{kind: cellOK, d: 2 * time.Second})
	rep.set("git", "sshfs/cold", b.cappedCell("git", "git", 30*time.Second))
	rep.set("bulk", "remotefs/cold", cell{kind: cellOK, d: time.Second, rate: 600, unit: "files/s"})
	rep.set("bulk", "sshfs/cold", b.cappedCell("bulk", "bulk", 30*time.Second))
	rep.set("bulkrm", "remotefs/cold", cell{kind: cellOK, d: time.Second, rate: 600, unit: "files/s"})
	rep.set("bulkrm", "sshfs/cold", b.cappedCell("bulk", "bulkrm", 30*time.Second))
	rep.set("git", "remotefs/warm", cell{kind: cellOK, d: time.Second})
	rep.set("git", "sshfs/warm", cell{kind: cellOK, d: 3 * time.Second})

	for _, tc := range []struct{ row, col, want string }{
		{"git", "sshfs/cold", "> 30.0 s"},
		{"git", "ratio/cold", "> 15.0x"},
		{"git", "ratio/warm", "3.0x"},
		{"bulk", "sshfs/cold", "> 30.0 s"},
		{"bulk", "ratio/cold", "> 60.0x"}, // 600 files/s against at most 300 files in 30 s
		{"bulkrm", "sshfs/cold", "> 30.0 s"},
		{"bulkrm", "ratio/cold", "—"}, // rm -rf started at an unknown time: no bound
	} {
		if got := rep.text(tc.row, tc.col); got != tc.want {
			t.Errorf("%s / %s: %q, want %q", tc.row, tc.col, got, tc.want)
		}
	}
	if rep.failed() {
		t.Error("capped cells mark the run failed")
	}
	text := rep.render()
	if !strings.Contains(text, `"> 30.0 s": sshfs was stopped after 30.0 s, its per-step cap`) || strings.Contains(text, "Problems") {
		t.Errorf("report without the cap's legend, or with problems:\n%s", text)
	}
	rep.set("git", "sshfs/warm", cell{kind: cellTimeout})
	if !rep.failed() {
		t.Error("a timeout beside capped cells does not mark the run failed")
	}
}

// TestSSHFSCap runs sshfs on a tiny realistic repository with an 8 s cap (long enough for the steps that should finish, on a loaded machine)
// and makes two steps pass it for real: the cold walk on a dead link (the
// step cannot return: the mount must be replaced by a fresh one) and the
// cold bulk write on a 600 ms link (tar is stopped part way: the half
// extracted folder must be removed from the server, the mount replaced).
// Every other step must still run and be right (the warm walk compares
// the mount with the server, git status its exact output), the run must
// not count as failed, and no mount may be left behind.
func TestSSHFSCap(t *testing.T) {
	if testing.Short() {
		t.Skip("runs sshd and sshfs mounts")
	}
	if _, err := exec.LookPath("sshfs"); err != nil {
		t.Skip("sshfs is not installed")
	}
	sshdtest.Require(t)
	testenv.RequireFUSE(t)
	cfg, err := parseFlags([]string{"-repo", "3k", "-quick", "-files", "40", "-history", "1MiB", "-rtt", "2ms", "-bulk", "30",
		"-bigfile", "1MiB", "-saves", "2", "-only", "sshfs", "-steps", "walk,git,bulk,save", "-sshfs-cap", "8s"})
	if err != nil {
		t.Fatal(err)
	}
	var capped []string
	cfg.hooks.beforeStep = func(b *bench, sys, pass, step string) {
		switch {
		case pass == "cold" && step == "walk":
			b.proxy.Blackhole(true)
		case pass == "cold" && step == "bulk":
			b.proxy.SetLatency(300 * time.Millisecond)
		}
	}
	cfg.hooks.afterCap = func(b *bench, sys, pass, step string) {
		capped = append(capped, pass+" "+step)
		b.proxy.Blackhole(false)
		b.proxy.SetLatency(cfg.rtt / 2)
	}
	rep, text := runChecked(t, cfg)
	if want := []string{"cold walk", "cold bulk"}; !slices.Equal(capped, want) {
		t.Errorf("steps stopped at the cap: %q, want %q", capped, want)
	}
	for _, rc := range []struct{ row, col, want string }{
		{"walk", "sshfs/cold", "> 8.00 s"},
		{"bulk", "sshfs/cold", "> 8.00 s"},
		{"bulkrm", "sshfs/cold", "> 8.00 s"},
	} {
		if got := rep.text(rc.row, rc.col); got != rc.want {
			t.Errorf("%s / %s: %q, want %q", rc.row, rc.col, got, rc.want)
		}
	}
	for _, row := range []string{"git", "save", "savevis"} {
		if c := rep.get(row, "sshfs/cold"); c.kind != cellOK {
			t.Errorf("%s / sshfs cold after a capped step: %q %s", row, cellText(c, row), c.note)
		}
	}
	for _, row := range rep.rows()[1:] {
		if c := rep.get(row, "sshfs/warm"); c.kind != cellOK {
			t.Errorf("%s / sshfs warm: %q %s", row, cellText(c, row), c.note)
		}
	}
	if rep.failed() {
		t.Error("the run counts as failed")
	}
	for _, want := range []string{"cold walk: stopped at the 8.00 s cap; mount replaced by a fresh one", "the step had not returned",
		"cold bulk: stopped at the 8.00 s cap; mount replaced by a fresh one", "left proj/bulk-cold on the server (repaired there)"} {
		if !strings.Contains(text, want) {
			t.Errorf("report does not say %q", want)
		}
	}
}

func TestDaemonMemory(t *testing.T) {
	hwm, rss, err := daemonMemory(os.Getpid())
	if err != nil || hwm < 1<<20 || rss < 1<<20 || rss > hwm {
		t.Errorf("daemonMemory(self) = %d, %d, %v; want sizes of at least 1 MiB, current <= peak", hwm, rss, err)
	}
	if _, _, err := daemonMemory(-1); err == nil {
		t.Error("daemonMemory(-1): no error")
	}
}
