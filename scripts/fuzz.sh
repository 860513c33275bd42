#!/usr/bin/env bash
# Run every fuzz target (func Fuzz* in a _test.go file) of every package for
# FUZZTIME each (default 20s). go test -fuzz takes one target of one package
# at a time, hence the loop. Fails on the first target that finds a crasher;
# the crasher is kept under the package's testdata/fuzz/ for go test to replay.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
go=${GO:-go}
fuzztime=${FUZZTIME:-20s}

ran=0
for pkg in $("$go" list ./...); do
  targets=$("$go" test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true)
  for target in $targets; do
    echo "== $pkg $target ($fuzztime)"
    "$go" test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
    ran=$((ran + 1))
  done
done
if [ "$ran" -eq 0 ]; then
  echo "fuzz: no fuzz targets found"
else
  echo "fuzz: $ran targets ran for $fuzztime each, no failures"
fi
