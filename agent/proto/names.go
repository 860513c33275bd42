// Package proto is what a mount and the programs it runs on the server
// say to each other: the wire formats of the upload helper (put.go), the
// change-feed helper (watch.go),
// and the names both sides must agree on. Package conn speaks the client
// side, package agent the server side; both import this package and
// nothing else of the other. See package agent's doc for the whole story.
package proto

// PutCommand is the hidden subcommand of the remotefs binary that runs the
// upload helper: `remotefs __put`. It reads requests on stdin and answers
// on stdout (put.go), and exits at stdin EOF.
const PutCommand = "__put"

// TempPrefix starts the name of every temporary file an upload creates, so
// that listings and the change feed can leave them out.
const TempPrefix = ".remotefs-tmp-"
