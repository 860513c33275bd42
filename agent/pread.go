package agent

// One range of one file, for the agent: what conn's ReadAt does over SFTP
// (open, read, fstat, close: three round trips) in one request.

import (
	"bufio"
	"context"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"remotefs/agent/proto"
)

// PreadMax is the most bytes one pread request returns.
const PreadMax = 4 << 20

// Pread reads up to LEN bytes of ROOT/PATH from OFF (args: -- ROOT PATH
// OFF LEN) and writes the byte count in decimal and a NUL, the bytes, then
// ROOT's record (empty path) and PATH's record as walk writes them, from
// an fstat of the open file after the read: the file as it was after
// every byte was read (conn compares it with the version it caches). A
// short count means the file ended. Nothing is written when the file
// cannot be opened or read (the error goes to stderr; conn then reads
// over SFTP, which names the error).
func Pread(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) != 5 || args[0] != "--" || !proto.ValidRel(args[2]) {
		return usageErr("usage: " + proto.PreadCommand + " -- ROOT PATH OFF LEN")
	}
	off, err1 := strconv.ParseInt(args[3], 10, 64)
	n, err2 := strconv.Atoi(args[4])
	if err1 != nil || err2 != nil || off < 0 || n < 0 || n > PreadMax {
		return usageErr("pread: bad OFF or LEN")
	}
	root, rel := strings.TrimSuffix(args[1], "/"), args[2]
	f, err := os.Open(root + "/" + rel)
	if err != nil {
		return errnoText(err)
	}
	defer f.Close()
	buf := make([]byte, n)
	got, err := f.ReadAt(buf, off)
	if err != nil && err != io.EOF {
		return errnoText(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return err
	}
	w := &walker{ctx: ctx, root: root, out: bufio.NewWriterSize(stdout, 64<<10), stderr: stderr}
	w.out.WriteString(strconv.Itoa(got))
	w.out.WriteByte(0)
	w.out.Write(buf[:got])
	if err := w.writeTop(root); err != nil {
		return err
	}
	w.rec = appendRecord(w.rec[:0], rel, "", &st)
	w.out.Write(w.rec)
	return w.out.Flush()
}
