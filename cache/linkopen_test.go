package cache

import (
	"context"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"remotefs/conn"
)

// linkWhileOpen opens p for writing (created when create), writes first
// through the handle, links p to other, waits until the link is
// delivered, then writes second after first (if any) and closes, and
// waits for that too: as a program that keeps a file open while another links it
// (the model test found it with open(O_CREAT), link, close).
func (e *env) linkWhileOpen(p, other string, create bool, first, second string) {
	e.t.Helper()
	ctx := context.Background()
	var h *Handle
	var a Attr
	var err error
	if create {
		a, h, err = e.s.Create(ctx, RootIno, p, 0o644, os.O_RDWR, false)
	} else {
		a = e.mustLookup(p)
		h, err = e.s.Open(ctx, a.Ino, os.O_RDWR)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := h.WriteAt([]byte(first), 0); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.s.Link(ctx, a.Ino, RootIno, other); err != nil {
		e.t.Fatal(err)
	}
	e.flush() // the link is delivered while p is still open
	if second != "" {
		if _, err := h.WriteAt([]byte(second), int64(len(first))); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := h.Release(); err != nil {
		e.t.Fatal(err)
	}
	e.flush()
}

// sameServerFile fails unless a and b are one file (hard links) on the
// server, holding want.
func (e *env) sameServerFile(a, b, want string) {
	e.t.Helper()
	for _, p := range []string{a, b} {
		if got := e.serverContent(p); got != want {
			e.t.Errorf("server's %s holds %q, want %q", p, got, want)
		}
	}
	fa, erra := os.Stat(e.remote.p(a))
	fb, errb := os.Stat(e.remote.p(b))
	if erra != nil || errb != nil || !os.SameFile(fa, fb) {
		e.t.Errorf("server's %s and %s are not one file (%v, %v)", a, b, erra, errb)
	}
}

// newLinkedEnv starts a store on a server that writes uploads to linked
// files in place, with a and b one file (content) on it and other
// another file there, then takes the server offline.
func newLinkedEnv(t *testing.T, a, b, content, other, otherContent string) *env {
	e := newEnv(t)
	e.remote.inPlace.Store(true)
	e.mustWrite(a, content)
	if _, err := e.s.Link(context.Background(), e.mustLookup(a).Ino, RootIno, b); err != nil {
		t.Fatal(err)
	}
	e.mustWrite(other, otherContent)
	e.flush()
	e.sameServerFile(a, b, content)
	e.s.Connected()
	e.remote.offline.Store(true)
	return e
}

// noConflictsNorPending fails when the store reports a conflict, a
// pending operation or an error.
func (e *env) noConflictsNorPending() {
	e.t.Helper()
	if st := e.s.Status(); len(st.Conflicts) != 0 || st.Pending != 0 || st.LastError != "" {
		e.t.Errorf("status: %d conflicts %+v, %d pending, last error %q", len(st.Conflicts), st.Conflicts, st.Pending, st.LastError)
	}
}

// A new file linked while it is still open for writing, before its first
// upload: the link reaches the server before the file does, so it is
// delivered as a copy of the content so far. That copy is not the file's
// own upload: the file still reaches the server under its first name at
// the close, and the second name ends as a hard link of it with the final
// content. (The copy used to mark the file clean, so its upload was
// skipped and the first name never reached the server.)
func TestLinkOfNewFileStillOpen(t *testing.T) {
	for _, tc := range []struct{ name, first, second string }{
		{"empty", "", ""}, // what the model test did: open(O_CREAT), link, close
		{"written before", "written before the link\n", ""},
		{"written before and after", "written before the link, ", "and after it\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.linkWhileOpen("new", "other", true, tc.first, tc.second)
			want := tc.first + tc.second
			e.sameServerFile("new", "other", want)
			for _, p := range []string{"new", "other"} {
				if got := e.mustRead(p); got != want {
					t.Errorf("the mount's %s holds %q, want %q", p, got, want)
				}
			}
			e.noConflictsNorPending()
		})
	}
}

// On a server without hard links, a file edited through a handle that
// is still open when it is linked: the link is delivered as a copy, and
// the edit still reaches the file's own name at the close, without a
// conflict (the copy used to pass for the file's upload: marked clean,
// the edit was never uploaded, and the expected server version was the
// copy's).
func TestLinkAsCopyOfFileStillOpen(t *testing.T) {
	e := newEnv(t)
	e.remote.noLinks.Store(true)
	e.server("f", "old content on the server\n")
	e.mustRead("f")
	e.linkWhileOpen("f", "g", false, "new content, longer than the old one, ", "and the rest\n")
	want := "new content, longer than the old one, and the rest\n"
	if got := e.serverContent("f"); got != want {
		t.Errorf("server's f holds %q, want %q", got, want)
	}
	if got := e.serverContent("g"); got == "" {
		t.Errorf("server's g is empty")
	}
	if got := e.mustRead("f"); got != want {
		t.Errorf("the mount's f holds %q, want %q", got, want)
	}
	e.noConflictsNorPending()
}

// The upload helper writes an upload over a file with more than one hard
// link in place, through its inode: every name of the file changes on
// the server. A rename over one name of a linked file, or its removal
// while offline, checks what the server has at that name; an upload of
// the file to one of its other names, made after the rename or removal,
// must not overtake it (they touch different paths), or the check finds
// the mount's own upload there and reports a conflict that is none.
// Here the changes are made offline, so that both are due at once when
// the server is back, and the server answers the check only once the
// upload had its chance to land first.
func TestLinkedNameReplacedThenOtherNameUploaded(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(e *env) // replaces or removes the name f
		want   string       // f on the server after the flush ("": none)
	}{
		{"rename over", func(e *env) {
			if err := e.s.Rename(context.Background(), RootIno, "new", RootIno, "f"); err != nil {
				e.t.Fatal(err)
			}
		}, "the file renamed over f\n"},
		{"offline unlink", func(e *env) {
			if err := e.s.Unlink(context.Background(), RootIno, "f"); err != nil {
				e.t.Fatal(err)
			}
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLinkedEnv(t, "f", "g", "first\n", "new", "the file renamed over f\n")
			tc.change(e)
			e.mustWrite("g", "g edited after that, longer\n")
			puts := e.remote.puts.Load()
			var once atomic.Bool
			e.remote.mu.Lock()
			e.remote.lstatHook = func(p string, fi conn.FileInfo, err error) (conn.FileInfo, error) {
				if p != "f" || !once.CompareAndSwap(false, true) {
					return fi, err
				}
				// Give an upload started alongside time to land.
				for deadline := time.Now().Add(500 * time.Millisecond); e.remote.puts.Load() == puts && time.Now().Before(deadline); {
					time.Sleep(5 * time.Millisecond)
				}
				return e.remote.lstat(p)
			}
			e.remote.mu.Unlock()
			e.remote.offline.Store(false)
			e.flush()

			if !once.Load() {
				t.Errorf("the server's f was never checked")
			}
			if got := e.serverContent("g"); got != "g edited after that, longer\n" {
				t.Errorf("server's g holds %q", got)
			}
			if _, err := os.Lstat(e.remote.p("f")); tc.want == "" && err == nil {
				t.Errorf("server's f is still there, holding %q", e.serverContent("f"))
			} else if tc.want != "" {
				if got := e.serverContent("f"); got != tc.want {
					t.Errorf("server's f holds %q, want %q", got, tc.want)
				}
			}
			e.noConflictsNorPending()
		})
	}
}

// A link whose source never reached the server (the file was deleted
// from the mount before its upload, which is then skipped) has nothing to
// link; it used to be delivered as a copy of whatever file the mount had
// at the new name by then, another one, which a later rename moved and a
// removal made offline then found as a changed file: a conflict copy of
// content the user never had there. Made offline, replayed at once.
func TestLinkOfFileDeletedBeforeUpload(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.mustWrite("x", "on the server\n")
	e.flush()
	e.s.Connected()
	e.remote.offline.Store(true)
	e.mustWrite("d", "a file that never reaches the server\n")
	if _, err := e.s.Link(ctx, e.mustLookup("d").Ino, RootIno, "b"); err != nil {
		t.Fatal(err)
	}
	if err := e.s.Rename(ctx, RootIno, "b", RootIno, "a"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"d", "a"} {
		if err := e.s.Unlink(ctx, RootIno, name); err != nil {
			t.Fatal(err)
		}
	}
	e.mustWrite("b", "another file, at the name the link made\n")
	e.remote.offline.Store(false)
	e.flush()

	ents, err := os.ReadDir(e.remote.root)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range ents {
		names = append(names, de.Name())
	}
	if want := []string{"b", "x"}; !slices.Equal(names, want) {
		t.Errorf("server has %v, want %v", names, want)
	}
	if got := e.serverContent("b"); got != "another file, at the name the link made\n" {
		t.Errorf("server's b holds %q", got)
	}
	e.noConflictsNorPending()
}

// What a rename over a name of a linked file expects there follows the
// file's uploads that land before it, also after a restart of the mount
// (what watches them in memory is gone): an upload through the file's
// other name, written in place by the upload helper, changes the name the
// rename replaces. The model test found it with an offline remount
// between the rename and the delivery.
func TestRenameOverLinkedNameExpectsUploadsAfterRestart(t *testing.T) {
	e := newLinkedEnv(t, "c", "d", "the linked file\n", "a", "renamed over d\n")
	ctx := context.Background()
	e.mustWrite("c", "edited before the rename\n") // an upload to c, then a relink to d
	if err := e.s.Rename(ctx, RootIno, "a", RootIno, "d"); err != nil {
		t.Fatal(err)
	}
	e.mustWrite("c", "edited after it, sent by the same upload\n")
	e.reopen()
	e.s.Connected()
	e.remote.offline.Store(false)
	e.flush()
	if got := e.serverContent("d"); got != "renamed over d\n" {
		t.Errorf("server's d holds %q", got)
	}
	if got := e.serverContent("c"); got != "edited after it, sent by the same upload\n" {
		t.Errorf("server's c holds %q", got)
	}
	e.noConflictsNorPending()
}
