#!/usr/bin/env bash
# Install what remotefs's build, tests, demo and benchmarks need on
# Debian/Ubuntu, and check that FUSE is usable.
#
# Idempotent: installs only what is missing, and runs `apt-get update` only
# when something is. Uses sudo only when not root (non-interactively when
# there is no terminal, as in CI). Needs no standard input.
#
#   scripts/install-deps.sh          # everything
#   scripts/install-deps.sh --check  # report what is missing, install nothing
set -euo pipefail

check_only=0
case "${1:-}" in
  --check) check_only=1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

log() { printf 'install-deps: %s\n' "$*"; }

# package -> a file or command that shows it is installed.
# (python3 is checked as a command: it may come from somewhere other than apt.)
declare -A probe=(
  [fuse3]=/usr/bin/fusermount3
  [openssh-server]=/usr/sbin/sshd
  [openssh-sftp-server]=/usr/lib/openssh/sftp-server
  [openssh-client]=ssh-keygen
  [git]=git
  [python3]=python3
  [inotify-tools]=inotifywait
  [sshfs]=sshfs
  [make]=make
  [gcc]=gcc # go test -race links with cgo
  [netcat-openbsd]=/bin/nc.openbsd # ProxyCommand tests (nc %h %p)
  [iproute2]=ip # network-change tests add an address
  [libpam-oath]=pam_oath.so # e2e: a password + one-time-code login (sshd with PAM)
  # the pjdfstest conformance suite (scripts/pjdfstest.sh) is built with
  # autoreconf and run with prove
  [autoconf]=autoreconf
  [automake]=automake
  [libtool]=libtoolize
  [perl]=prove
  [strace]=strace # e2e: counts the daemon's fdatasync calls (journal group commit) and checks that git status on a fresh mount opens no work-tree file
)

installed() {
  case "$1" in
    /*) [ -x "$1" ] ;;
    pam_*.so) compgen -G "/lib/*/security/$1" >/dev/null || [ -e "/usr/lib/security/$1" ] ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}

missing=()
for pkg in fuse3 openssh-server openssh-sftp-server openssh-client git python3 inotify-tools sshfs make gcc netcat-openbsd iproute2 libpam-oath autoconf automake libtool perl strace; do
  installed "${probe[$pkg]}" || missing+=("$pkg")
done

if [ "$(id -u)" -eq 0 ]; then
  as_root() { "$@"; }
elif command -v sudo >/dev/null 2>&1; then
  if [ -t 0 ]; then
    as_root() { sudo "$@"; }
  else
    as_root() { sudo -n "$@"; }
  fi
else
  as_root() {
    echo "install-deps: need root for: $*  (not root, and no sudo)" >&2
    return 1
  }
fi

if [ ${#missing[@]} -eq 0 ]; then
  log "all packages present"
elif [ $check_only -eq 1 ]; then
  log "missing: ${missing[*]}"
else
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: missing ${missing[*]}, and there is no apt-get here; install them by hand." >&2
    exit 1
  fi
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -q </dev/null
  as_root apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
  still=()
  for pkg in "${missing[@]}"; do
    installed "${probe[$pkg]}" || still+=("$pkg")
  done
  if [ ${#still[@]} -gt 0 ]; then
    echo "install-deps: still missing after apt-get: ${still[*]}" >&2
    exit 1
  fi
fi

# sshd refuses to start as root without its privilege-separation directory
# (normally made by systemd at boot, absent in containers).
if [ "$(id -u)" -eq 0 ] && [ ! -d /run/sshd ] && [ $check_only -eq 0 ]; then
  mkdir -m 0755 /run/sshd
fi

# FUSE: the device must exist and open for reading and writing.
fuse_ok() { ( exec 3<>/dev/fuse ) 2>/dev/null; }
if [ ! -e /dev/fuse ] && [ $check_only -eq 0 ]; then
  as_root modprobe fuse </dev/null 2>/dev/null || true
  [ -e /dev/fuse ] || as_root mknod -m 0666 /dev/fuse c 10 229 </dev/null 2>/dev/null || true
fi
if fuse_ok; then
  log "/dev/fuse is usable"
else
  cat >&2 <<EOF
install-deps: WARNING: /dev/fuse is not usable by $(id -un), so mounts will fail.
  $(ls -l /dev/fuse 2>&1)
  - no device: load the module (sudo modprobe fuse); in a container, start it
    with --device /dev/fuse --cap-add SYS_ADMIN (or run it privileged);
  - permission denied: sudo chmod 0666 /dev/fuse, or run as root.
EOF
  exit 1
fi
