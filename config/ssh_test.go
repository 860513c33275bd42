package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"remotefs/internal/clitest"
)

// --ssh, -o ssh= and the config key ssh pick the ssh implementation; the
// command line wins; anything but builtin and openssh is refused.
func TestSSHOption(t *testing.T) {
	home := clitest.IsolateEnv(t)
	mnt := filepath.Join(home, "mnt")
	os.Mkdir(mnt, 0o755)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"gpu-box:proj", mnt}, "builtin"},
		{[]string{"--ssh=openssh", "gpu-box:proj", mnt}, "openssh"},
		{[]string{"gpu-box:proj", mnt, "-o", "ssh=openssh,attr_ttl=2s"}, "openssh"},
	} {
		cfg, err := ParseMount(tc.args)
		if err != nil || cfg.SSH != tc.want {
			t.Errorf("%v: ssh %q, %v; want %q", tc.args, cfg.SSH, err, tc.want)
		}
	}
	if _, err := ParseMount([]string{"--ssh=putty", "gpu-box:proj", mnt}); err == nil || !strings.Contains(err.Error(), "builtin or openssh") {
		t.Errorf("--ssh=putty: %v", err)
	}

	conf := filepath.Join(home, "config", "remotefs", "config.toml")
	os.MkdirAll(filepath.Dir(conf), 0o700)
	os.WriteFile(conf, []byte("[host.\"gpu-box\"]\nssh = \"openssh\"\n"), 0o600)
	if cfg, err := ParseMount([]string{"gpu-box:proj", mnt}); err != nil || cfg.SSH != "openssh" {
		t.Errorf("config ssh = openssh: %q, %v", cfg.SSH, err)
	}
	if cfg, err := ParseMount([]string{"--ssh", "builtin", "gpu-box:proj", mnt}); err != nil || cfg.SSH != "builtin" {
		t.Errorf("--ssh builtin over the config file: %q, %v", cfg.SSH, err)
	}
	os.WriteFile(conf, []byte("[defaults]\n\nssh = \"plink\"\n"), 0o600)
	if _, err := ParseMount([]string{"gpu-box:proj", mnt}); err == nil || !strings.Contains(err.Error(), "config.toml:3: ssh:") {
		t.Errorf("config ssh = plink: %v, want an error at line 3", err)
	}
}
