#!/usr/bin/env bash
# End-to-end demo of remotefs on a fresh machine, with nothing but this repo:
#
#   1. installs what is missing (scripts/install-deps.sh) and builds bin/remotefs;
#   2. starts a throwaway OpenSSH server on 127.0.0.1 (own host key, own user
#      key, own config), and a throwaway client HOME whose ~/.ssh/config has
#      "Host demo-box", the way a user's real setup looks;
#   3. puts a small git-tracked python project on the "server" side;
#   4. mounts it with remotefs, browses it, runs git, saves an edit the way
#      editors do (temp file + rename), unmounts, and shows on the server side
#      that the edit arrived. Prints "demo OK" at the end.
#
# Everything lives in one mktemp -d directory, removed on exit; the script
# exits non-zero if any step fails.
#
# REMOTEFS_DEMO_STANDIN=sshfs runs the same demo with sshfs in place of
# remotefs (no build): a check of the sshd / ssh_config plumbing alone.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
standin=${REMOTEFS_DEMO_STANDIN:-}
case "$standin" in "" | sshfs) ;; *) echo "REMOTEFS_DEMO_STANDIN must be empty or sshfs" >&2; exit 2 ;; esac

say() { printf '\n== %s\n' "$*"; }

# show prints a command the way a terminal transcript would.
show() {
  local out="" a q="'"
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:@=+,%-]+$ ]]; then
      out+=" $a"
    else
      out+=" '${a//$q/$q\\$q$q}'"
    fi
  done
  printf '$%s\n' "$out"
}

# run shows a command, then runs it (bounded, so a hang fails the demo).
run() {
  show "$@"
  timeout -k 10 300 "$@"
}

fail() {
  echo "demo: $*" >&2
  exit 1
}

# --- 1. dependencies and build ------------------------------------------------

say "dependencies"
bash "$repo/scripts/install-deps.sh" </dev/null

if [ -z "$standin" ]; then
  say "build"
  (cd "$repo" && run go build -o bin/remotefs ./cmd/remotefs)
  export PATH="$repo/bin:$PATH"
fi

# --- 2. a throwaway sshd and client HOME -------------------------------------

T=$(mktemp -d "${TMPDIR:-/tmp}/remotefs-demo.XXXXXX")
T=$(cd "$T" && pwd -P)
sshd_pid=""
mnt="$T/mnt"

cleanup() {
  local rc=$?
  set +e
  if mountpoint -q "$mnt" 2>/dev/null; then
    if [ -z "$standin" ]; then
      timeout -k 5 30 remotefs unmount "$mnt" >/dev/null 2>&1
    fi
    mountpoint -q "$mnt" && fusermount3 -u "$mnt" 2>/dev/null
    mountpoint -q "$mnt" && fusermount3 -uz "$mnt" 2>/dev/null
  fi
  if [ $rc -ne 0 ]; then
    echo >&2
    echo "demo FAILED (exit $rc); logs:" >&2
    [ -s "$T/sshd/sshd.log" ] && { echo "--- sshd.log" >&2; tail -n 30 "$T/sshd/sshd.log" >&2; }
    if [ -d "$T/xdg" ]; then
      find "$T/xdg" -type f -name '*.log' 2>/dev/null | while read -r f; do
        echo "--- $f" >&2
        tail -n 30 "$f" >&2
      done
    fi
  fi
  if [ -n "$sshd_pid" ]; then
    kill "$sshd_pid" 2>/dev/null
    wait "$sshd_pid" 2>/dev/null
  fi
  if mountpoint -q "$mnt" 2>/dev/null; then
    echo "demo: $mnt is still mounted; leaving $T in place" >&2
  else
    rm -rf "$T"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "a throwaway ssh server and client in $T"

user=$(id -un)
mkdir -p "$T/server/projects" "$mnt" "$T/xdg/cache" "$T/xdg/state"
mkdir -m 0700 "$T/xdg/runtime"

# shellcheck source=lib/throwaway-sshd.sh
. "$repo/scripts/lib/throwaway-sshd.sh"
throwaway_sshd "$T" demo-box "$user" || fail "the throwaway sshd did not start"
echo "sshd on 127.0.0.1:$sshd_port (pid $sshd_pid); ssh demo-box works"

# --- 3. a project on the server ----------------------------------------------

say "a python project on the server side"
proj="$T/server/projects/my-model"
mkdir -p "$proj/scripts"
cat >"$proj/README.md" <<'EOF'
# my-model

A tiny model, trained on the GPU box. Run `./run-training.sh`.
EOF
cat >"$proj/train.py" <<'EOF'
"""Train the model."""
from data import load_batches
from model import Model

LEARNING_RATE = 1e-3
EPOCHS = 10


def main():
    model = Model()
    for epoch in range(EPOCHS):
        for batch in load_batches():
            model.step(batch, LEARNING_RATE)
        print(f"epoch {epoch}: loss {model.loss:.4f}")


if __name__ == "__main__":
    main()
EOF
cat >"$proj/model.py" <<'EOF'
class Model:
    def __init__(self):
        self.weight = 0.0
        self.loss = 1.0

    def step(self, batch, lr):
        grad = sum(batch) / len(batch) - self.weight
        self.weight += lr * grad
        self.loss = abs(grad)
EOF
cat >"$proj/data.py" <<'EOF'
def load_batches(n=100, size=8):
    for i in range(n):
        yield [float((i * size + j) % 7) for j in range(size)]
EOF
cat >"$proj/scripts/prepare_data.py" <<'EOF'
print("nothing to prepare")
EOF
cat >"$proj/run-training.sh" <<'EOF'
#!/bin/sh
# Start a training run on this machine.
cd "$(dirname "$0")" || exit 1
if [ "${1:-}" = "--dry-run" ]; then
    echo "would run: python3 train.py (in $(basename "$(pwd)"))"
    exit 0
fi
exec python3 train.py
EOF
chmod +x "$proj/run-training.sh"
printf '__pycache__/\nruns/\n' >"$proj/.gitignore"
git -C "$proj" -c init.defaultBranch=main init -q
git -C "$proj" add -A
git -C "$proj" -c user.name=Demo -c user.email=demo@example.invalid commit -q -m "Initial commit"
echo "created $proj ($(git -C "$proj" ls-files | wc -l) files, one commit)"

cat >"$T/editor-save.py" <<'EOF'
"""Save FILE the way editors do: write a temporary file next to it, fsync,
rename it over the original. Replaces OLD with NEW in its text."""
import os
import sys

path, old, new = sys.argv[1:4]
with open(path) as f:
    text = f.read()
if old not in text:
    sys.exit(f"{path}: {old!r} not found")
tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp~")
with open(tmp, "w") as f:
    f.write(text.replace(old, new))
    f.flush()
    os.fsync(f.fileno())
os.chmod(tmp, os.stat(path).st_mode & 0o7777)
os.rename(tmp, path)
print(f"saved {path} (temp file + rename)")
EOF

# --- 4. the user's side ------------------------------------------------------

say "mount, browse, edit, unmount (as the user, HOME=$T/home)"
export HOME="$T/home"
export XDG_CACHE_HOME="$T/xdg/cache" XDG_STATE_HOME="$T/xdg/state" XDG_RUNTIME_DIR="$T/xdg/runtime"
unset SSH_AUTH_SOCK
cd "$T"

if [ "$standin" = sshfs ]; then
  run sshfs -F "$HOME/.ssh/config" "demo-box:$T/server/projects" mnt
else
  run remotefs mount "demo-box:$T/server/projects" mnt
fi
mountpoint -q mnt || fail "mnt is not a mount point after mount returned"

run ls -la mnt/my-model
run cat mnt/my-model/README.md
run ./mnt/my-model/run-training.sh --dry-run
run git -C mnt/my-model status
run python3 editor-save.py mnt/my-model/train.py "LEARNING_RATE = 1e-3" "LEARNING_RATE = 3e-4"
run grep -n LEARNING_RATE mnt/my-model/train.py
run git -C mnt/my-model status --short
if [ "$standin" = sshfs ]; then
  echo "(sshfs stand-in: no status)"
  run fusermount3 -u mnt
else
  run remotefs status mnt
  run remotefs unmount mnt
fi
! mountpoint -q mnt || fail "mnt is still mounted after unmount"

say "on the server"
run cat server/projects/my-model/train.py
run git -C server/projects/my-model diff --stat
grep -qx 'LEARNING_RATE = 3e-4' server/projects/my-model/train.py || fail "the edit did not reach the server"
[ "$(git -C server/projects/my-model diff --numstat)" = "$(printf '1\t1\ttrain.py')" ] ||
  fail "the server copy differs from the commit by more than the edit"
[ ! -e server/projects/my-model/.train.py.tmp~ ] || fail "the editor's temporary file was left on the server"
[ -x server/projects/my-model/run-training.sh ] || fail "run-training.sh lost its exec bit"

echo
echo "demo OK"
