package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"remotefs/conn"
	"remotefs/internal/clitest"
)

const sampleConfig = `# remotefs config
[defaults]
attr_ttl = "2s"
cache_size = "20G"
ignore = ["*.pyc", "__pycache__"]
server_folders = ["results", "runs", "wandb", "notebooks"]

[host."gpu-box"]
dir_ttl = "30s"
cache_dir = "~/big/gpu"
server_folders = ["results/", "checkpoints"]
offline = false

[host."alice@lab"]
read_only = true
ignore = []
ssh_config = "ssh/lab_config"
`

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigSections(t *testing.T) {
	home := clitest.IsolateEnv(t)
	p := writeConfig(t, sampleConfig)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	spec := func(s string) conn.Spec {
		sp, err := conn.ParseSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		return sp
	}
	sec, name := c.Section(spec("gpu-box:proj"))
	if name != "gpu-box" || *sec.AttrTTL != "2s" || *sec.DirTTL != "30s" || *sec.CacheDir != "~/big/gpu" {
		t.Errorf("gpu-box: %q %+v", name, sec)
	}
	if _, name := c.Section(spec("bob@gpu-box:proj")); name != "gpu-box" {
		t.Errorf("user@host did not match the host section: %q", name)
	}
	if _, name := c.Section(spec("lab:proj")); name != "" {
		t.Errorf("lab matched %q; only alice@lab should", name)
	}
	sec, name = c.Section(spec("alice@lab:x"))
	if name != "alice@lab" || !*sec.ReadOnly || len(*sec.Ignore) != 0 || *sec.AttrTTL != "2s" {
		t.Errorf("alice@lab: %q %+v", name, sec)
	}
	if got := c.ExpandPath("~/big/gpu"); got != filepath.Join(home, "big/gpu") {
		t.Errorf("expandPath ~: %s", got)
	}
	if got := c.ExpandPath("ssh/lab_config"); got != filepath.Join(filepath.Dir(p), "ssh/lab_config") {
		t.Errorf("expandPath relative: %s", got)
	}
}

func TestConfigAppliesDefaultsCommandLineWins(t *testing.T) {
	home := clitest.IsolateEnv(t)
	os.MkdirAll(filepath.Join(home, "config", "remotefs"), 0o700)
	os.WriteFile(filepath.Join(home, "config", "remotefs", "config.toml"), []byte(sampleConfig), 0o600)
	mnt := t.TempDir()

	cfg, err := ParseMount([]string{"gpu-box:proj", mnt})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AttrTTL != 2*time.Second || cfg.DirTTL != 30*time.Second || cfg.CacheSize != 20<<30 ||
		cfg.CacheDir != filepath.Join(home, "big/gpu") || cfg.ReadOnly {
		t.Errorf("defaults not applied: %+v", cfg)
	}
	if !reflect.DeepEqual(cfg.ServerFolders, []string{"results", "checkpoints"}) || !reflect.DeepEqual(cfg.Ignore, []string{"*.pyc", "__pycache__"}) {
		t.Errorf("lists: ignore %q server_folders %q", cfg.Ignore, cfg.ServerFolders)
	}

	cfg, err = ParseMount([]string{"--attr-ttl=5s", "gpu-box:proj", mnt, "-o", "dir_ttl=1s,cache_dir=/elsewhere"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AttrTTL != 5*time.Second || cfg.DirTTL != time.Second || cfg.CacheDir != "/elsewhere" {
		t.Errorf("command line did not win: %+v", cfg)
	}

	// Another host gets [defaults] only; default cache dir.
	cfg, err = ParseMount([]string{"other:proj", mnt})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DirTTL != 10*time.Second || cfg.AttrTTL != 2*time.Second || !strings.HasPrefix(cfg.CacheDir, filepath.Join(home, "cache", "remotefs")) {
		t.Errorf("other host: %+v", cfg)
	}
	if !reflect.DeepEqual(cfg.ServerFolders, []string{"results", "runs", "wandb", "notebooks"}) {
		t.Errorf("server_folders %q", cfg.ServerFolders)
	}

	// --config names another file; a missing one is an error.
	other := writeConfig(t, "[defaults]\nattr_ttl = \"7s\"\n")
	cfg, err = ParseMount([]string{"--config", other, "gpu-box:proj", mnt})
	if err != nil || cfg.AttrTTL != 7*time.Second {
		t.Errorf("--config: %v %+v", err, cfg)
	}
	if _, err := ParseMount([]string{"-o", "config=/nonexistent.toml", "gpu-box:proj", mnt}); err == nil || !strings.Contains(err.Error(), "nonexistent.toml") {
		t.Errorf("missing --config file: %v", err)
	}
}

func TestConfigErrorsNameFileAndLine(t *testing.T) {
	for _, tc := range []struct {
		text string
		line int
		want string
	}{
		{"[defaults]\nattr_ttl = \"2s\"\nbogus = 1\n", 3, `unknown key "defaults.bogus"`},
		{"[defaults]\n\n[host.\"x\"]\ndir_tl = \"1s\"\n", 4, `unknown key "host.x.dir_tl"`},
		{"attr_ttl = \"1s\"\n", 1, `unknown key "attr_ttl"`},
		{"[defaultz]\n", 1, `unknown section [defaultz]`},
		{"[host]\nattr_ttl = \"1s\"\n", 2, `host.attr_ttl: the settings of a host go in a [host."NAME"] section`},
		{"[defaults]\nattr_ttl = \"2 s\"\n", 2, `invalid duration "2 s"`},
		{"[defaults]\n\nattr_ttl = 5\n", 3, `defaults.attr_ttl must be a string such as "2s"`},
		{"[defaults]\noffline = \"yes\"\n", 2, "defaults.offline must be true or false"},
		{"[defaults]\nignore = \"*.pyc\"\n", 2, "must be a list of strings"},
		{"[defaults]\ncache_size = \"lots\"\n", 2, `invalid size "lots"`},
		{"[defaults]\ncache_dir = \"/x\"\n", 2, `cache_dir belongs in a [host."NAME"] section`},
		{"[host.\"a\"]\nserver_folders = [\"../up\"]\n", 2, "relative to the remote root"},
		{"[host.\"a\"]\nignore = [\"[\"]\n", 2, `invalid pattern "["`},
		{"[defaults]\nuid_map = [\"1001=1000\"]\n", 2, `want "REMOTE:LOCAL" numeric ids`},
		{"[defaults]\ngid_map = [\"a:1\"]\n", 2, `want "REMOTE:LOCAL" numeric ids`},
		{"[defaults]\nattr_ttl = \n", 2, "toml"},
		{"[defaults]\n[defaults]\n", 2, ""},
	} {
		p := writeConfig(t, tc.text)
		_, err := Load(p)
		if err == nil {
			t.Errorf("%q: no error", tc.text)
			continue
		}
		prefix := p + ":" + strconv.Itoa(tc.line) + ": "
		if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n got %v\nwant %s...%s", tc.text, err, prefix, tc.want)
		}
	}
}

func TestConfigMissingDefaultFileIsEmpty(t *testing.T) {
	clitest.IsolateEnv(t)
	c, err := Load("")
	if err != nil || len(c.Hosts) != 0 || c.Defaults.AttrTTL != nil {
		t.Fatalf("%+v %v", c, err)
	}
}

// The help page lists every key.
func TestHelpConfigListsEveryKey(t *testing.T) {
	page := HelpConfig()
	for _, k := range Settings {
		if k.Key != "" && !strings.Contains(page, "  "+k.Key+" (") {
			t.Errorf("remotefs help config does not document %s", k.Key)
		}
	}
	// And the sample in the help page parses.
	i := strings.Index(page, "  [defaults]")
	j := strings.Index(page, "Keys (")
	sample := strings.ReplaceAll(page[i:j], "\n  ", "\n")
	if _, err := parseConfig("help", []byte(strings.TrimPrefix(sample, "  "))); err != nil {
		t.Errorf("the example in remotefs help config does not parse: %v\n%s", err, sample)
	}
}

// forwards = false is --no-forwards; forwards = true in a host section
// turns them back on over [defaults]; the command line wins.
func TestConfigForwardsKey(t *testing.T) {
	mnt := t.TempDir()
	conf := writeConfig(t, "[defaults]\nforwards = false\n[host.\"lab\"]\nforwards = true\n")
	for _, tc := range []struct {
		args []string
		want bool // NoForwards
	}{
		{[]string{"box:p", mnt}, true},
		{[]string{"lab:p", mnt}, false},
		{[]string{"--no-forwards", "lab:p", mnt}, true},
		{[]string{"lab:p", mnt, "-o", "no_forwards"}, true},
		{[]string{"--no-forwards=false", "box:p", mnt}, false},
	} {
		cfg, err := ParseMount(append([]string{"--config", conf}, tc.args...))
		if err != nil || cfg.NoForwards != tc.want {
			t.Errorf("%q: NoForwards %v, want %v (%v)", tc.args, cfg != nil && cfg.NoForwards, tc.want, err)
		}
	}
}

func TestConfigIDMaps(t *testing.T) {
	home := clitest.IsolateEnv(t)
	os.MkdirAll(filepath.Join(home, "config", "remotefs"), 0o700)
	os.WriteFile(filepath.Join(home, "config", "remotefs", "config.toml"),
		[]byte("[defaults]\nuid_map = [\"1001:1000\", \"0:65534\"]\n[host.\"gpu\"]\ngid_map = [\"2000:100\"]\n"), 0o600)
	cfg, err := ParseMount([]string{"gpu:proj", t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg.UIDMap, map[uint32]uint32{1001: 1000, 0: 65534}) || !reflect.DeepEqual(cfg.GIDMap, map[uint32]uint32{2000: 100}) {
		t.Errorf("uid_map %v gid_map %v", cfg.UIDMap, cfg.GIDMap)
	}
}
