// Package proto is what a mount and the programs it runs on the server
// say to each other: the wire formats of the upload helper (put.go), the
// change-feed helper (watch.go), the per-connection agent that carries
// them and the listing and fetch commands over one channel (mux.go), and
// the names both sides must agree on. Package conn speaks the client
// side, package agent the server side; both import this package and
// nothing else of the other. See package agent's doc for the whole story.
package proto

// PutCommand is the hidden subcommand of the remotefs binary that runs the
// upload helper: `remotefs __put`. It reads requests on stdin and answers
// on stdout (put.go), and exits at stdin EOF.
const PutCommand = "__put"

// Commands of the agent (mux.go) besides the two helpers, as the first
// word of a stream's argv. Their outputs are those of the commands conn
// runs where there is no agent, so one reader serves both.
const (
	// WalkCommand: `walk [--prune GLOB]... [--top DIR] -- ROOT`; stdout:
	// the record of DIR (the mount root; default ROOT) with an empty path,
	// then a GNU find record (conn/tree.go's findFormat) per entry under
	// ROOT, paths relative to ROOT.
	WalkCommand = "walk"
	// StatCommand: `stat -- ROOT`; stdin: root-relative paths, each ended
	// by NUL; stdout: ROOT's record with an empty path, then a record in
	// the same format per path that exists.
	StatCommand = "stat"
	// WalkEachCommand: `walkeach -- ROOT`; stdin: root-relative folder
	// paths, each ended by NUL; stdout: ROOT's record with an empty path,
	// then the records of every entry below each folder in turn, as walk
	// writes them (pre-order, nothing pruned, paths relative to ROOT).
	WalkEachCommand = "walkeach"
	// PreadCommand: `pread -- ROOT PATH OFF LEN`; stdout: the count of
	// bytes read from OFF (at most LEN; fewer at the end of the file) in
	// decimal and a NUL, the bytes, then ROOT's record with an empty path
	// and PATH's record from an fstat after the read.
	PreadCommand = "pread"
	// FetchCommand: `fetch -- ROOT`; stdin: root-relative paths, each
	// ended by NUL; stdout: a tar stream of those that are regular files,
	// with GNU tar's warnings on stderr for files that changed meanwhile.
	FetchCommand = "fetch"
)

// TempPrefix starts the name of every temporary file an upload creates, so
// that listings and the change feed can leave them out.
const TempPrefix = ".remotefs-tmp-"
