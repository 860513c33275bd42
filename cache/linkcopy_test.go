package cache

import (
	"context"
	"testing"
)

// On a server without hard links a link is delivered as a copy of the
// file, also when the file's content was never read through the mount:
// it is fetched from the server for the copy (the link's own pending
// operation does not count as a local change that the fetch would
// overwrite), and the journal drains.
func TestLinkAsCopyOfUncachedFile(t *testing.T) {
	e := newEnv(t)
	e.remote.noLinks.Store(true)
	e.server("a.txt", "on the server only\n")
	a := e.mustLookup("a.txt")
	if _, err := e.s.Link(context.Background(), a.Ino, RootIno, "b.txt"); err != nil {
		t.Fatal(err)
	}
	e.flush()
	if got := e.serverContent("b.txt"); got != "on the server only\n" {
		t.Errorf("server's b.txt holds %q", got)
	}
	if got := e.serverContent("a.txt"); got != "on the server only\n" {
		t.Errorf("server's a.txt holds %q", got)
	}
	if got := e.mustRead("b.txt"); got != "on the server only\n" {
		t.Errorf("the mount's b.txt holds %q", got)
	}
	if st := e.s.Status(); st.Pending != 0 || st.LastError != "" {
		t.Errorf("after flush: %d pending, last error %q", st.Pending, st.LastError)
	}
}
