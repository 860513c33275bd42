package e2e

import (
	"os"
	"testing"
)

// Files a `remotefs run` command writes on the server are on the mount as
// soon as run returns.
func TestRunOutputVisibleAtOnce(t *testing.T) {
	w := newWorld(t)
	w.writeServer("proj/train.py", "print('training')\n", 0o644)
	w.mount()
	if _, err := os.ReadDir(w.m("proj")); err != nil {
		t.Fatal(err)
	}
	w.mustIn(w.m("proj"), binary, "run", "sh", "-c", "mkdir -p results && echo 'loss 0.1' > results/metrics.txt && rm train.py")
	b, err := os.ReadFile(w.m("proj/results/metrics.txt"))
	if err != nil || string(b) != "loss 0.1\n" {
		t.Fatalf("results/metrics.txt right after run: %q, %v", b, err)
	}
	if _, err := os.Stat(w.m("proj/train.py")); !os.IsNotExist(err) {
		t.Fatalf("train.py removed by the command still visible: %v", err)
	}
}
