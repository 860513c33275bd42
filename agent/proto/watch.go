package proto

// The change-feed helper's wire format: `remotefs __watch` (package agent)
// writes records on its stdout, conn's Watch reads them.
//
//	record: KIND NUL PATH NUL
//
// PATH is relative to the watched root, never starts or ends with "/" and
// has no empty, "." or ".." element; KIND is one of the WatchRec* bytes.
// For S, X, E and L the second field is not a path: S has none, X may say
// why, E and L carry a message. The helper reads its stdin only as a
// heartbeat: it exits at EOF, or when nothing came for its heartbeat
// timeout.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// WatchCommand is the hidden subcommand of the remotefs binary that runs
// the watch helper: `remotefs __watch [--heartbeat-timeout D]
// [--ignore GLOB]... -- ROOT`.
const WatchCommand = "__watch"

// Watch record kinds.
const (
	WatchRecStarted = 'S' // the watches are in place (path empty)
	WatchRecChange  = 'C' // created, modified, attributes or moved here; not a directory
	WatchRecDir     = 'D' // a directory created, moved here or its attributes changed ("" is the root)
	WatchRecGone    = 'G' // deleted or moved away; not a directory
	WatchRecGoneDir = 'H' // a directory deleted or moved away
	// WatchRecMoved: moved here from the path of the record just before
	// it (a G or H record, written for the same rename); a file or a
	// directory. Without such a record before it, it reads as C.
	WatchRecMoved    = 'R'
	WatchRecOverflow = 'X' // events were lost (path: why, may be empty)
	WatchRecError    = 'E' // fatal error (path: the message); the helper exits
	WatchRecLimit    = 'L' // the inotify watch limit was hit (path: message); the helper exits
)

// ErrWatchStream: the helper's output does not follow the format.
var ErrWatchStream = errors.New("malformed watch helper output")

// WriteWatchRecord writes one record. The caller flushes w at the end of
// a batch of events.
func WriteWatchRecord(w *bufio.Writer, kind byte, p string) error {
	w.WriteByte(kind)
	w.WriteByte(0)
	w.WriteString(p)
	return w.WriteByte(0)
}

// ReadWatchRecords reads records from r and calls rec for each, until a
// clean end of the stream (nil) or an error from r or rec. A record with
// an unknown kind, a path that is not a clean relative one (empty only for
// S, D, X, E, L; and S must have none), or a truncated last record is an
// error wrapping ErrWatchStream.
func ReadWatchRecords(r io.Reader, rec func(kind byte, p string) error) error {
	br := bufio.NewReaderSize(r, 64*1024)
	for {
		k, err := br.ReadString(0)
		if err != nil {
			if err == io.EOF && k == "" {
				return nil
			}
			if err == io.EOF {
				return fmt.Errorf("%w: truncated record", ErrWatchStream)
			}
			return err
		}
		p, err := br.ReadString(0)
		if err != nil {
			if err == io.EOF {
				return fmt.Errorf("%w: truncated record", ErrWatchStream)
			}
			return err
		}
		k, p = k[:len(k)-1], p[:len(p)-1]
		if len(k) != 1 {
			return fmt.Errorf("%w: bad kind %q", ErrWatchStream, k)
		}
		kind := k[0]
		switch kind {
		case WatchRecStarted:
			if p != "" {
				return fmt.Errorf("%w: %q record with a path", ErrWatchStream, k)
			}
		case WatchRecOverflow, WatchRecError, WatchRecLimit:
			// p is a message.
		case WatchRecDir: // "" is the root
			if !ValidRel(p) {
				return fmt.Errorf("%w: bad path %q", ErrWatchStream, p)
			}
		case WatchRecChange, WatchRecGone, WatchRecGoneDir, WatchRecMoved:
			if p == "" || !ValidRel(p) {
				return fmt.Errorf("%w: bad path %q", ErrWatchStream, p)
			}
		default:
			return fmt.Errorf("%w: bad kind %q", ErrWatchStream, k)
		}
		if err := rec(kind, p); err != nil {
			return err
		}
	}
}

// ValidRel reports whether p is "" or a clean relative path (no leading
// or trailing "/", no empty, "." or ".." element, no NUL).
func ValidRel(p string) bool {
	if p == "" {
		return true
	}
	if strings.IndexByte(p, 0) >= 0 {
		return false
	}
	for el := range strings.SplitSeq(p, "/") {
		if el == "" || el == "." || el == ".." {
			return false
		}
	}
	return true
}
