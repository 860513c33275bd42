#!/usr/bin/env python3
"""Save a file the ways editors do.

usage: editor_save.py MODE PATH TEXT
  inplace  open with O_TRUNC and write (nano, many IDEs)
  rename   write a temp file in the same folder, fsync, rename over (VS Code, JetBrains "safe write", emacs)
  backup   rename the original to PATH~, write a new PATH, delete the backup (vim's default)
  append   open with O_APPEND and write
"""
import os
import sys

mode, path, text = sys.argv[1], sys.argv[2], sys.argv[3] + "\n"

if mode == "inplace":
    with open(path, "w") as f:
        f.write(text)
elif mode == "rename":
    d, base = os.path.split(path)
    tmp = os.path.join(d, "." + base + ".tmp-save")
    st = os.stat(path)
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, st.st_mode & 0o7777)
    os.replace(tmp, path)
elif mode == "backup":
    st = os.stat(path)
    os.rename(path, path + "~")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, st.st_mode & 0o7777)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.unlink(path + "~")
elif mode == "append":
    with open(path, "a") as f:
        f.write(text)
else:
    sys.exit("unknown mode " + mode)
