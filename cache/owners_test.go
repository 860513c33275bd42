package cache

import "testing"

func TestLocalOwnerMapping(t *testing.T) {
	s := &Store{opts: Options{Owners: Owners{LocalUID: 1000, LocalGID: 1000,
		UIDMap: map[uint32]uint32{4242: 1234}, GIDMap: map[uint32]uint32{77: 88}}}}
	a := func(uid, gid uint32) Attr { return Attr{Uid: uid, Gid: gid, HasOwner: true} }
	// Login ids not known yet: everything is the local user's.
	if u, g := s.LocalOwner(a(0, 0)); u != 1000 || g != 1000 {
		t.Errorf("unknown login: %d:%d", u, g)
	}
	s.remoteOwner.Store(uint64(501)<<32 | 20 | 1<<63) // login: 501:20
	for _, tc := range []struct {
		in           Attr
		wantU, wantG uint32
	}{
		{a(501, 20), 1000, 1000}, // the login user's
		{a(0, 0), 0, 0},          // root's
		{a(777, 5), 777, 5},      // someone else's
		{a(4242, 77), 1234, 88},  // mapped
		{a(501, 77), 1000, 88},   // own file, mapped group
		{Attr{}, 1000, 1000},     // not described by the server yet
	} {
		if u, g := s.LocalOwner(tc.in); u != tc.wantU || g != tc.wantG {
			t.Errorf("%d:%d (has %v) shows as %d:%d, want %d:%d", tc.in.Uid, tc.in.Gid, tc.in.HasOwner, u, g, tc.wantU, tc.wantG)
		}
	}
	// And back, for chown.
	for _, tc := range []struct{ local, want uint32 }{{1000, 501}, {1234, 4242}, {777, 777}, {0, 0}} {
		if got := remoteID(tc.local, 1000, 501, s.opts.Owners.UIDMap); got != tc.want {
			t.Errorf("local uid %d goes to the server as %d, want %d", tc.local, got, tc.want)
		}
	}
}
