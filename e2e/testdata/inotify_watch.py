#!/usr/bin/env python3
"""Watch a folder tree with the inotify system calls through ctypes (no
inotify-tools), the way an editor's or test runner's watcher does: one
watch per folder, a watch added for each folder created. Prints one line
per event, "EVENT[,EVENT...] PATH", flushed; "ready" once watching."""
import ctypes
import ctypes.util
import os
import struct
import sys

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
libc.inotify_init1.argtypes = [ctypes.c_int]
libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]

NAMES = {
    0x00000001: "ACCESS", 0x00000002: "MODIFY", 0x00000004: "ATTRIB",
    0x00000008: "CLOSE_WRITE", 0x00000010: "CLOSE_NOWRITE", 0x00000020: "OPEN",
    0x00000040: "MOVED_FROM", 0x00000080: "MOVED_TO", 0x00000100: "CREATE",
    0x00000200: "DELETE", 0x00000400: "DELETE_SELF", 0x00000800: "MOVE_SELF",
    0x00008000: "IGNORED", 0x40000000: "ISDIR",
}
MASK = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400
IN_CREATE, IN_ISDIR, IN_MOVED_TO = 0x100, 0x40000000, 0x80

fd = libc.inotify_init1(0)
if fd < 0:
    sys.exit("inotify_init1: " + os.strerror(ctypes.get_errno()))
wds = {}


def watch(path):
    wd = libc.inotify_add_watch(fd, path.encode(), MASK)
    if wd < 0:
        print("watch failed", path, os.strerror(ctypes.get_errno()), file=sys.stderr)
        return
    wds[wd] = path
    for name in sorted(os.listdir(path)):
        p = os.path.join(path, name)
        if os.path.isdir(p) and not os.path.islink(p):
            watch(p)


watch(sys.argv[1])
print("ready", flush=True)
while True:
    buf = os.read(fd, 65536)
    i = 0
    while i < len(buf):
        wd, mask, _cookie, length = struct.unpack_from("iIII", buf, i)
        name = buf[i + 16:i + 16 + length].rstrip(b"\0").decode()
        i += 16 + length
        base = wds.get(wd)
        if base is None:
            continue
        path = os.path.join(base, name) if name else base
        names = [n for bit, n in NAMES.items() if mask & bit]
        print(",".join(names), path, flush=True)
        if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
            watch(path)
