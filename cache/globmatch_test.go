package cache

import (
	"path"
	"testing"
)

// globMatch's shortcut for patterns without metacharacters answers as
// path.Match does, on the base name and on the whole path.
func TestGlobMatchAsPathMatch(t *testing.T) {
	globs := []string{"node_modules", "__pycache__", "*.pyc", "build/out", "a[bc]", "x?y", `we\ird`, "web/node_modules"}
	paths := []string{"node_modules", "web/node_modules", "a/b/__pycache__", "m.pyc", "src/m.pyc", "build/out", "x/build/out",
		"ab", "q/ac", "xzy", "weird", "we\\ird", "node_modules2", "pkg/node_modules/x", "", "."}
	for _, g := range globs {
		for _, p := range paths {
			b, _ := path.Match(g, path.Base(p))
			w, _ := path.Match(g, p)
			if got := globMatch([]string{g}, p); got != (b || w) {
				t.Errorf("globMatch(%q, %q) = %v, path.Match says %v", g, p, got, b || w)
			}
		}
	}
}
