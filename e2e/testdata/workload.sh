#!/usr/bin/env bash
# What a developer does to a project during a day, with ordinary tools.
# Run in the project folder; SAVE is the editor_save.py script.
set -euo pipefail
cat README.md >/dev/null
ls -laR . >/dev/null
grep -rn "def " src >/dev/null
cp src/app.py src/app_copy.py
mv src/util.py src/helpers.py
mkdir -p pkg/sub
echo 'x = 1' > pkg/sub/mod.py
echo 'appended by the shell' >> README.md
chmod +x scripts/run.sh
chmod 600 src/app_copy.py
ln -s ../src/app.py pkg/link_to_app
rm data/big.bin
mkdir empty && rmdir empty
truncate -s 3 pkg/sub/mod.py
python3 "$SAVE" inplace src/app.py 'print("edited in place")'
python3 "$SAVE" rename src/helpers.py 'def helper(): return 42'
python3 "$SAVE" backup pkg/sub/mod.py 'y = 2'
python3 "$SAVE" append README.md 'appended by python'
touch -d '2025-06-01 12:00:00' README.md
ln scripts/run.sh scripts/run-link.sh
mv pkg renamed_pkg
git init -q -b main .
git add -A
git commit -q -m "initial"
echo '# more' >> src/app.py
git rm -q --cached src/app_copy.py
mkdir -p build && for i in $(seq 1 30); do echo "artifact $i" > "build/out$i.txt"; done
rm -r build/out1*.txt
git status --porcelain=v1 --untracked-files=all > ../status-"$(basename "$PWD")".txt || true
