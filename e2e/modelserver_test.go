package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Server changes while the model's mount is away: at an online remount
// the mount is unmounted with everything delivered, then the server's
// folder is changed directly (and the reference the same way), and the
// mount comes back with the cache it left. What changed must show at the
// first look on the new mount, by name (a lookup, before the tree listing
// has reached it) as well as in the compared trees: a file rewritten
// with another size, with the same size in another second or within the
// same second as the cached version, a file removed, a file added.

// serverChange is one change made on the server while unmounted.
type serverChange struct {
	rel, how string
}

// changeServer makes a few changes on the server and in the reference.
// The server equals the reference here (the unmount delivered
// everything). Without the server's agent on the mount that left the
// cache (it had not started yet), a rewrite within the same second is
// made in another second instead: the mount cannot have learnt the
// server's ctime of a file it changed itself, and nothing else tells
// such a rewrite (the documented limit).
func (m *model) changeServer(i int, withAgent bool) []serverChange {
	diffManifests(m.t, fmt.Sprintf("the server before it changes (remount at op %d)", i), manifest(m.t, m.ref), manifest(m.t, m.w.root))
	var done []serverChange
	_, dirs, files := m.existing()
	for n := 1 + m.rng.IntN(4); n > 0; n-- {
		how := []string{"size", "second", "same second", "removed", "added"}[m.rng.IntN(5)]
		if how == "same second" && !withAgent {
			how = "second"
		}
		var rel string
		switch {
		case how == "added":
			d := m.pick(dirs)
			if d != "" && m.rng.IntN(3) == 0 {
				d = ""
			}
			rel = joinRel(d, m.randName())
			if _, err := os.Lstat(filepath.Join(m.ref, rel)); err == nil {
				continue
			}
		case len(files) == 0:
			continue
		default:
			rel = m.pick(files)
		}
		if err := m.changeServerFile(rel, how); err != nil {
			m.t.Logf("server change %s (%s) left out: %v", rel, how, err)
			continue
		}
		done = append(done, serverChange{rel, how})
		m.serverChanges++
		m.log = append(m.log, fmt.Sprintf("     server: %s %s", how, rel))
		_, dirs, files = m.existing()
	}
	return done
}

// changeServerFile applies one change to the server's file and the
// reference's.
func (m *model) changeServerFile(rel, how string) error {
	sp, rp := filepath.Join(m.w.root, rel), filepath.Join(m.ref, rel)
	if how == "removed" {
		if err := os.Remove(sp); err != nil {
			return err
		}
		return os.Remove(rp)
	}
	var st syscall.Stat_t
	var old []byte
	if how != "added" {
		if err := syscall.Lstat(sp, &st); err != nil {
			return err
		}
		var err error
		if old, err = os.ReadFile(sp); err != nil {
			return err
		}
	}
	data := m.randData()
	var mtime time.Time
	switch how {
	case "size":
		for len(data) == len(old) {
			data = m.randData()
		}
	case "second", "same second":
		if len(old) == 0 {
			return errors.New("empty: no other content of the same size")
		}
		data = make([]byte, len(old))
		for k := range data {
			data[k] = byte('A' + m.rng.IntN(26))
		}
		if bytes.Equal(data, old) {
			data[0] ^= 1
		}
		mtime = time.Unix(st.Mtim.Sec+1+int64(m.rng.IntN(100)), st.Mtim.Nsec)
		if how == "same second" {
			mtime = time.Unix(st.Mtim.Sec, (st.Mtim.Nsec+1+int64(m.rng.IntN(999_999_999)))%1_000_000_000)
		}
	}
	// Written in place, as an editor on the server does: every name of
	// a hard-linked file changes, on both sides.
	for _, p := range []string{sp, rp} {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			if p == rp {
				m.t.Fatalf("the reference's %s: %v (the server's was changed)", rel, err)
			}
			return err
		}
		_, err = f.Write(data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			m.t.Fatalf("write %s: %v", p, err)
		}
	}
	if !mtime.IsZero() {
		return os.Chtimes(sp, mtime, mtime)
	}
	return nil
}

// checkServerChanges looks up each changed path on the new mount, before
// anything else asks for it, and compares what it shows and reads with
// the reference.
func (m *model) checkServerChanges(i int, changes []serverChange) {
	m.t.Helper()
	for _, c := range changes {
		rp, mp := filepath.Join(m.ref, c.rel), filepath.Join(m.w.mnt, c.rel)
		rfi, rerr := os.Lstat(rp)
		mfi, merr := os.Lstat(mp)
		switch {
		case errors.Is(rerr, fs.ErrNotExist) != errors.Is(merr, fs.ErrNotExist):
			m.t.Errorf("remount at op %d: %s (%s on the server): reference %v, mount %v", i, c.rel, c.how, rerr, merr)
			continue
		case rerr != nil:
			continue
		case merr != nil:
			m.t.Errorf("remount at op %d: lstat %s (%s on the server): %v", i, c.rel, c.how, merr)
			continue
		}
		if rfi.Mode().IsRegular() && rfi.Size() != mfi.Size() {
			m.t.Errorf("remount at op %d: %s (%s on the server) shows size %d, reference %d", i, c.rel, c.how, mfi.Size(), rfi.Size())
		}
		var sst syscall.Stat_t
		if syscall.Lstat(filepath.Join(m.w.root, c.rel), &sst) == nil && rfi.Mode().IsRegular() {
			if mt := mfi.Sys().(*syscall.Stat_t).Mtim; mt != sst.Mtim {
				m.t.Errorf("remount at op %d: %s (%s on the server) shows mtime %d.%09d, server %d.%09d", i, c.rel, c.how, mt.Sec, mt.Nsec, sst.Mtim.Sec, sst.Mtim.Nsec)
			}
		}
		rb, rerr := os.ReadFile(rp)
		mb, merr := os.ReadFile(mp)
		if rerr == nil && (merr != nil || !bytes.Equal(rb, mb)) {
			m.t.Errorf("remount at op %d: %s (%s on the server) reads %s, %v; reference %s", i, c.rel, c.how, hashOf(mb), merr, hashOf(rb))
		}
	}
}
