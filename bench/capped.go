package main

// The per-step cap of sshfs (-sshfs-cap): on the realistic repositories
// some sshfs steps take many minutes (a first git status re-reads every
// tracked file at one round trip per request), so a run beside sshfs
// stops such a step at the cap, reports it as "> cap", repairs what the
// stopped step left behind on the server, replaces the mount when it has
// to, and goes on with the next step.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// stepCap is the per-step cap of sys; 0 = none.
func (b *bench) stepCap(sys string) time.Duration {
	if sys == "sshfs" {
		return b.cfg.sshfsCap
	}
	return 0
}

// cappedCell is the cell of a row whose step was stopped at limit. Only the
// step's first row gets a bound the ratio may use: a later row's part
// started after the first's, at a time the benchmark does not know.
func (b *bench) cappedCell(step, row string, limit time.Duration) cell {
	c := cell{kind: cellCapped, d: limit, note: fmt.Sprintf("stopped at the %s cap", fmtDur(limit))}
	if row != stepRows(step)[0] {
		c.note = fmt.Sprintf("not reached: the %s step was stopped at the %s cap", step, fmtDur(limit))
		return c
	}
	c.bound = true
	if work, unit := b.rowWork(row); unit != "" {
		// At most this much work in the time: an upper bound of the rate.
		c.rate, c.unit = work/limit.Seconds(), unit
	}
	return c
}

// rowWork is the work a rate row measures and its unit ("" for rows
// measured in time).
func (b *bench) rowWork(row string) (float64, string) {
	switch row {
	case "bulk", "bulkrm":
		if b.bulk != nil {
			return float64(len(b.bulk.files)), "files/s"
		}
	case "bigread", "capread":
		return float64(b.cfg.bigfile) / 1e6, "MB/s"
	}
	return 0, ""
}

// afterCap records a step stopped at its cap and gets the system ready
// for the next step: the rows the step finished keep their results, the
// others say "> limit"; what the stopped step left on the server is
// repaired; and the mount is replaced by a fresh one when the step did not
// return (a call stuck in the mount), when the mount no longer answers, or
// when the server was repaired behind its back (its caches would show the
// leftovers). It returns the mount to go on with, nil when there is none.
func (b *bench) afterCap(ctx context.Context, m *mountPoint, st *sysState, step, pass string, limit time.Duration, cells map[string]cell) *mountPoint {
	sys, col := m.name, m.name+"/"+pass
	for _, r := range stepRows(step) {
		c, ok := cells[r]
		if !ok || c.kind != cellOK {
			c = b.cappedCell(step, r, limit)
		}
		b.rep.set(r, col, c)
		b.logf("%s %s %-9s %s", sys, pass, r, c.logString())
	}
	if h := b.cfg.hooks.afterCap; h != nil {
		h(b, sys, pass, step)
	}
	var why []string
	if cells == nil {
		why = append(why, fmt.Sprintf("the step had not returned %v after the cap", stepGrace))
	} else if err := probeMount(ctx, filepath.Join(m.root, projDir)); err != nil {
		why = append(why, "the mount no longer answers: "+err.Error())
	}
	if len(why) > 0 {
		// Whatever is stuck in the mount fails now, so that the
		// repairs below do not race with it.
		m.abortFUSE()
	}
	leftovers := b.stepLeftovers(st)
	if len(leftovers) > 0 {
		why = append(why, "the stopped step left "+strings.Join(leftovers, ", ")+" on the server (repaired there)")
	}
	if len(why) == 0 {
		b.rep.notef("%s %s %s: stopped at the %s cap; the mount was fine and stayed", sys, pass, step, fmtDur(limit))
		return m
	}
	m.release()
	if releaseFailed(m.releaseNote) {
		b.rep.notef("%s %s %s: releasing the mount after the cap: %s", sys, pass, step, m.releaseNote)
	}
	if err := b.repairLeftovers(st); err != nil {
		b.rep.problemf("%s %s %s: repairing the server after the cap: %v", sys, pass, step, err)
		return nil
	}
	nm := b.newMountPoint(sys, "")
	t0 := time.Now()
	if _, err := nm.mount(ctx); err != nil {
		nm.release()
		b.rep.problemf("%s %s %s: mounting again after the cap: %v", sys, pass, step, err)
		return nil
	}
	b.rep.notef("%s %s %s: stopped at the %s cap; mount replaced by a fresh one (%s) because %s", sys, pass, step, fmtDur(limit), fmtDur(time.Since(t0)), strings.Join(why, "; "))
	b.logf("%s: mount replaced after the capped %s step", sys, step)
	return nm
}

// probeMount checks a mount still answers: a stat and a listing of dir
// within 10 seconds.
func probeMount(ctx context.Context, dir string) error {
	done := make(chan error, 1)
	go func() {
		if _, err := os.Stat(dir); err != nil {
			done <- err
			return
		}
		_, err := os.ReadDir(dir)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		return errors.New("no answer to a stat and a listing of the project in 10 s")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// leftoverPaths are the server paths a stopped step can leave behind:
// the bulk step's folders, git's index lock, the safe-save temp files.
func (b *bench) leftoverPaths(st *sysState) []string {
	srv := filepath.Join(b.srv.Dir, projDir)
	paths := []string{filepath.Join(srv, "bulk-cold"), filepath.Join(srv, "bulk-warm"), filepath.Join(srv, ".git", "index.lock")}
	for _, rel := range st.safeFiles {
		paths = append(paths, filepath.Join(srv, filepath.Dir(rel), "."+filepath.Base(rel)+".bench-save~"))
	}
	return paths
}

// stepLeftovers lists what a stopped step left on the server: leftover
// paths, and .py files whose content is not what the benchmark's record
// of its changes (st.modified) says (the formatter or a save stopped
// part way).
func (b *bench) stepLeftovers(st *sysState) []string {
	var out []string
	for _, p := range b.leftoverPaths(st) {
		if _, err := os.Lstat(p); err == nil {
			rel, _ := filepath.Rel(b.srv.Dir, p)
			out = append(out, rel)
		}
	}
	if n := len(b.modifiedOnServer(st)); n > 0 {
		out = append(out, fmt.Sprintf("%d .py file(s) changed that the benchmark had not recorded", n))
	}
	return out
}

// modifiedOnServer lists the .py files whose modified state on the server
// (content differs from the commit) differs from st.modified.
func (b *bench) modifiedOnServer(st *sysState) []string {
	srv := filepath.Join(b.srv.Dir, projDir)
	var out []string
	for _, rel := range b.proj.pyFiles {
		data, err := os.ReadFile(filepath.Join(srv, rel))
		changed := err != nil || !bytes.Equal(data, b.proj.content[rel])
		if changed != st.modified[rel] {
			out = append(out, rel)
		}
	}
	return out
}

// repairLeftovers removes the leftover paths and brings st.modified in
// line with the server: a file the stopped formatter rewrote stays
// rewritten, and git status must list it.
func (b *bench) repairLeftovers(st *sysState) error {
	for _, p := range b.leftoverPaths(st) {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	for _, rel := range b.modifiedOnServer(st) {
		if st.modified[rel] {
			delete(st.modified, rel)
		} else {
			st.modified[rel] = true
		}
	}
	return nil
}
