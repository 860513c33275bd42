#!/usr/bin/env bash
# Run the pjdfstest POSIX conformance suite on a remotefs mount of a
# throwaway loopback sshd, and (optionally) on sshfs and the local disk for
# comparison. Writes the per-file results to docs/pjdfstest.md.
#
#   scripts/pjdfstest.sh                    # remotefs only (what CI runs)
#   scripts/pjdfstest.sh remotefs sshfs local   # all three, for the README
#
# Runs as root (the suite switches users and chowns): the remote account is
# root too, and the mount has allow_other,default_permissions, as JuiceFS and
# SeaweedFS run it in their CI. The suite comes from a source tarball
# (PJDFSTEST_TARBALL, default ../shared/third_party/pjdfstest-*.tar.gz beside
# the clone) and is built here with autoreconf/configure/make.
#
# Environment:
#   PJDFSTEST_TARBALL  the suite's source tarball
#   PJDFSTEST_JOBS     test files run in parallel (default 8: most of the time is sleep)
#   PJDFSTEST_OUT      results file (default docs/pjdfstest.md); the targets not run keep
#                      the rows it records (PJDFSTEST_MERGE=0: only the targets run)
#   PJDFSTEST_MIN      fail when remotefs passes fewer files than this
#   PJDFSTEST_LOGS     copy prove's full output here
#   PJDFSTEST_FILES    only these test files (e.g. "chmod/00.t link/00.t")
#   PJDFSTEST_VERBOSE  non-empty: every subtest's line in the prove output
#   PJDFSTEST_TIMEOUT  seconds the whole prove run may take per target (default 900)
#
# Exit status: non-zero when a mount or the build fails, or when remotefs
# passes fewer than PJDFSTEST_MIN files. Failing test files alone do not
# fail the script: they are recorded, each with its reason
# (docs/pjdfstest-reasons.txt).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(remotefs)
for t in "${targets[@]}"; do
  case "$t" in remotefs | sshfs | local) ;; *) echo "unknown target $t (remotefs, sshfs, local)" >&2; exit 2 ;; esac
done
jobs=${PJDFSTEST_JOBS:-8}
out=${PJDFSTEST_OUT:-$repo/docs/pjdfstest.md}
reasons=$repo/docs/pjdfstest-reasons.txt

[ "$(id -u)" -eq 0 ] || { echo "pjdfstest: must run as root (the suite changes users and owners)" >&2; exit 2; }

tarball=${PJDFSTEST_TARBALL:-}
if [ -z "$tarball" ]; then
  for f in "$repo"/../shared/third_party/pjdfstest-*.tar.gz /work/shared/third_party/pjdfstest-*.tar.gz; do
    if [ -f "$f" ]; then tarball=$f; break; fi
  done
fi
[ -n "$tarball" ] && [ -f "$tarball" ] || { echo "pjdfstest: no source tarball (set PJDFSTEST_TARBALL)" >&2; exit 1; }

T=$(mktemp -d "${TMPDIR:-/tmp}/remotefs-pjdfstest.XXXXXX")
T=$(cd "$T" && pwd -P)
sshd_pid=""
mounted=()

cleanup() {
  local rc=$? m
  set +e
  for m in "${mounted[@]}"; do
    if mountpoint -q "$m" 2>/dev/null; then
      fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null
    fi
  done
  if [ -n "$sshd_pid" ]; then
    kill "$sshd_pid" 2>/dev/null
    wait "$sshd_pid" 2>/dev/null
  fi
  if [ $rc -ne 0 ]; then
    find "$T" -maxdepth 4 -type f -name '*.log' 2>/dev/null | while read -r f; do
      echo "--- $f" >&2
      tail -n 30 "$f" >&2
    done
  fi
  for m in "${mounted[@]}"; do
    mountpoint -q "$m" 2>/dev/null && { echo "pjdfstest: $m still mounted; leaving $T" >&2; exit $rc; }
  done
  rm -rf "$T"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== build pjdfstest from $(basename "$tarball")"
mkdir -p "$T/src"
tar -xzf "$tarball" -C "$T/src"
pjd=$(find "$T/src" -maxdepth 2 -name configure.ac -printf '%h\n' | head -1)
(cd "$pjd" && autoreconf -ifs && ./configure && make pjdfstest) >"$T/build.log" 2>&1 || { tail -n 40 "$T/build.log" >&2; exit 1; }
nfiles=$(find "$pjd/tests" -name '*.t' | wc -l)
echo "$nfiles test files"

# shellcheck source=lib/throwaway-sshd.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/throwaway-sshd.sh"
start_sshd() {
  mkdir -p "$T/server"
  throwaway_sshd "$T" pjd-box root || { echo "pjdfstest: the test sshd did not start" >&2; return 1; }
}

# run_suite TARGET DIR: prove every test file from DIR; results in $T/TARGET.prove
run_suite() {
  local target=$1 dir=$2 t0 t1
  echo "== $target: prove -j$jobs in $dir"
  t0=$(date +%s)
  local files=("$pjd/tests")
  if [ -n "${PJDFSTEST_FILES:-}" ]; then
    files=()
    for f in $PJDFSTEST_FILES; do files+=("$pjd/tests/$f"); done
  fi
  (cd "$dir" && timeout -k 10 "${PJDFSTEST_TIMEOUT:-900}" prove --timer ${PJDFSTEST_VERBOSE:+-v} -j"$jobs" -r "${files[@]}" >"$T/$target.prove" 2>&1) || true
  t1=$(date +%s)
  echo "$((t1 - t0))" >"$T/$target.secs"
  tail -n 3 "$T/$target.prove"
}

for target in "${targets[@]}"; do
  case "$target" in
  local)
    mkdir -p "$T/local"
    run_suite local "$T/local"
    echo "$(df -PT "$T/local" | tail -1 | awk '{print $2}')" >"$T/local.fs"
    ;;
  sshfs)
    [ -n "$sshd_pid" ] || start_sshd
    mkdir -p "$T/server/sshfs" "$T/mnt-sshfs"
    sshfs -F "$T/home/.ssh/config" -o allow_other,default_permissions "pjd-box:$T/server/sshfs" "$T/mnt-sshfs"
    mounted+=("$T/mnt-sshfs")
    run_suite sshfs "$T/mnt-sshfs"
    fusermount3 -u "$T/mnt-sshfs"
    ;;
  remotefs)
    [ -n "$sshd_pid" ] || start_sshd
    (cd "$repo" && go build -o "$T/remotefs" ./cmd/remotefs)
    mkdir -p "$T/server/remotefs" "$T/mnt-remotefs" "$T/xdg/cache" "$T/xdg/state"
    mkdir -m 0700 -p "$T/xdg/runtime"
    HOME="$T/home" XDG_CACHE_HOME="$T/xdg/cache" XDG_STATE_HOME="$T/xdg/state" XDG_RUNTIME_DIR="$T/xdg/runtime" \
      "$T/remotefs" mount -F "$T/home/.ssh/config" -o allow_other,default_permissions \
      "pjd-box:$T/server/remotefs" "$T/mnt-remotefs" >"$T/mount.log" 2>&1 || { cat "$T/mount.log" >&2; exit 1; }
    mounted+=("$T/mnt-remotefs")
    run_suite remotefs "$T/mnt-remotefs"
    HOME="$T/home" XDG_RUNTIME_DIR="$T/xdg/runtime" timeout -k 5 120 "$T/remotefs" unmount "$T/mnt-remotefs" ||
      fusermount3 -u "$T/mnt-remotefs"
    ;;
  esac
done

# Per-file results: "FILE ok" or "FILE failed N/M" from prove's output.
python3 - "$T" "$pjd/tests" "$out" "$reasons" "${targets[@]}" <<'EOF'
import os, re, sys
tmp, tests, out, reasons_path, targets = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
files = sorted(os.path.relpath(os.path.join(d, f), tests)
               for d, _, fs in os.walk(tests) for f in fs if f.endswith('.t'))
reasons = {}
if os.path.exists(reasons_path):
    for line in open(reasons_path):
        line = line.rstrip('\n')
        if line and not line.startswith('#') and '\t' in line:
            k, v = line.split('\t', 1)
            reasons[k] = v
line_re = re.compile(r'^(?:\[[0-9:]+\] )?(?:\S*/)?tests/(\S+\.t) \.+ ?(.*)$')
ms_re = re.compile(r'\b(\d+) ms\b')
results, subtests, slow = {}, {}, []
for t in targets:
    path = os.path.join(tmp, t + '.prove')
    res = {f: 'not run' for f in files}
    if os.path.exists(path):
        text = open(path, errors='replace').read()
        for line in text.splitlines():
            m = line_re.match(line.strip())
            if not m:
                continue
            f, rest = m.group(1), m.group(2)
            t_ms = ms_re.search(rest)
            if t_ms:
                slow.append((int(t_ms.group(1)), t, f))
            if rest.startswith('ok'):
                res[f] = 'ok'
            elif rest:
                res[f] = rest
        # Test Summary Report: failed subtest numbers
        cur = None
        for line in text.splitlines():
            m = re.match(r'^(?:\S*/)?tests/(\S+\.t) +\(Wstat: (\d+) Tests: \d+ Failed: (\d+)\)', line)
            if m:
                cur = m.group(1)
                # A file is listed here for "TODO passed" too: that is a pass.
                bad = m.group(2) != '0' or m.group(3) != '0'
                if bad and res.get(cur) in ('ok', 'not run'):
                    res[cur] = 'failed'
                continue
            m = re.match(r'^\s+Failed tests?:\s+(.*)$', line)
            if m and cur:
                subtests[(t, cur)] = m.group(1)
            m = re.match(r'^\s+(?:Non-zero exit status|Parse errors)', line)
            if m and cur and res.get(cur) == 'ok':
                res[cur] = 'failed'
    results[t] = res
secs = {t: open(os.path.join(tmp, t + '.secs')).read().strip() for t in targets
        if os.path.exists(os.path.join(tmp, t + '.secs'))}
fstype = open(os.path.join(tmp, 'local.fs')).read().strip() if 'local' in targets else ''
# Targets not run now keep what the results file records for them (a run
# of remotefs alone updates its row next to the recorded local and sshfs
# ones), unless PJDFSTEST_MERGE=0.
run, kept = list(targets), []
if os.environ.get('PJDFSTEST_MERGE', '1') != '0' and os.path.exists(out):
    section, cols = '', []
    for line in open(out).read().splitlines():
        if line.startswith('## '):
            section = line
            continue
        if not line.startswith('|') or line.startswith('|---'):
            continue
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if section == '':
            if cells[0] == 'target':
                continue
            name, _, fs_ = cells[0].partition(' (')
            if name in run or name in kept:
                continue
            kept.append(name)
            results[name] = {f: 'ok' for f in files}
            secs_kept = cells[2] if len(cells) > 2 else ''
            results[name + '/secs'] = secs_kept
            if name == 'local' and fs_:
                fstype = fs_.rstrip(')')
        elif section.startswith('## Failing'):
            if cells[0] == 'file':
                cols = cells[1:-1]
                continue
            for t, r in zip(cols, cells[1:-1]):
                if t in kept and cells[0] in results[t]:
                    if r.startswith('failed: '):
                        results[t][cells[0]], subtests[(t, cells[0])] = 'failed', r[len('failed: '):]
                    else:
                        results[t][cells[0]] = r
        elif section.startswith('## Slowest'):
            if cells[0] in kept:
                slow.append((int(round(float(cells[2]) * 1000)), cells[0], cells[1]))
targets = run + kept
for t in kept:
    secs[t] = results.pop(t + '/secs')
w = []
w.append('# pjdfstest results\n')
w.append('Generated by `scripts/pjdfstest.sh %s` (pjdfstest 85a8aea, %d test files, run as root,\n' % (' '.join(run), len(files)))
w.append('remote account root, `-o allow_other,default_permissions`). Do not edit by hand: rerun the\n')
w.append('script. Reasons for failures come from `docs/pjdfstest-reasons.txt`.\n')
if kept:
    w.append('The %s rows are kept from the earlier run recorded here (the script merges a run\n' % ' and '.join(kept))
    w.append('of some targets into what this file records for the others; `PJDFSTEST_MERGE=0` does not).\n')
w.append('\n| target | test files passed | seconds |\n|---|---|---|\n')
for t in targets:
    name = t + (' (%s)' % fstype if t == 'local' and fstype else '')
    w.append('| %s | %d / %d | %s |\n' % (name, sum(1 for f in files if results[t][f] == 'ok'), len(files), secs.get(t, '')))
w.append('\n## Failing test files\n\n')
w.append('| file | ' + ' | '.join(targets) + ' | why remotefs fails it |\n|---|' + '---|' * len(targets) + '---|\n')
for f in files:
    if all(results[t][f] == 'ok' for t in targets):
        continue
    cells = []
    for t in targets:
        r = results[t][f]
        if r != 'ok' and (t, f) in subtests:
            r = 'failed: ' + subtests[(t, f)]
        cells.append(r)
    why = reasons.get(f, '') if results.get('remotefs', {}).get(f, 'ok') != 'ok' else ''
    w.append('| %s | %s | %s |\n' % (f, ' | '.join(cells), why))
w.append('\n## Slowest test files\n\n| target | file | seconds |\n|---|---|---|\n')
for ms, t, f in sorted(slow, reverse=True)[:10]:
    w.append('| %s | %s | %.1f |\n' % (t, f, ms / 1000))
os.makedirs(os.path.dirname(out), exist_ok=True)
open(out, 'w').write(''.join(w))
for t in run:
    print('%s: %d / %d test files passed' % (t, sum(1 for f in files if results[t][f] == 'ok'), len(files)))
    open(os.path.join(tmp, t + '.passed'), 'w').write(str(sum(1 for f in files if results[t][f] == 'ok')))
EOF
echo "results in $out"
if [ -n "${PJDFSTEST_LOGS:-}" ]; then
  mkdir -p "$PJDFSTEST_LOGS" && cp "$T"/*.prove "$PJDFSTEST_LOGS"/
fi

if [ -n "${PJDFSTEST_MIN:-}" ] && [ -f "$T/remotefs.passed" ]; then
  passed=$(cat "$T/remotefs.passed")
  if [ "$passed" -lt "$PJDFSTEST_MIN" ]; then
    echo "pjdfstest: remotefs passed $passed test files, fewer than $PJDFSTEST_MIN" >&2
    exit 1
  fi
fi
