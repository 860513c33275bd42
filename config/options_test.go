package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"remotefs/internal/cli"
	"remotefs/internal/clitest"
)

func TestIsMountHelperForm(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"gpu-box:projects", "/mnt", "-o", "rw"}, true},
		{[]string{"alice@[::1]:/srv", "/mnt"}, true},
		{[]string{"remotefs#gpu-box:x", "/mnt"}, true},
		{[]string{"mount", "gpu-box:x", "/mnt"}, false},
		{[]string{"status"}, false},
		{[]string{"--help"}, false},
		{nil, false},
	} {
		if got := IsHelperForm(tc.args); got != tc.want {
			t.Errorf("IsHelperForm(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}

func TestExpandMountOptions(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
		err  string
	}{
		// What mount.fuse3 passes for `mount -t fuse.remotefs h:p /m -o ro,attr_ttl=2s`.
		{in: []string{"h:p", "/m", "-o", "rw,ro,attr_ttl=2s,dev,suid"},
			want: []string{"h:p", "/m", "--read-only=false", "--read-only=true", "--attr-ttl=2s"}},
		{in: []string{"h:p", "/m", "-ooffline,cache_dir=/x"},
			want: []string{"h:p", "/m", "--offline=true", "--cache-dir=/x"}},
		{in: []string{"-o", "allow_other,foreground,debug,ssh_config=/c,F=/d", "h:p", "/m"},
			want: []string{"--allow-other=true", "--foreground=true", "--debug=true", "--F=/c", "--F=/d", "h:p", "/m"}},
		{in: []string{"h:p", "/m", "-o", "_netdev,noauto,nofail,user,users,noatime,relatime,nodev,nosuid,exec,auto,default_permissions,x-systemd.automount,comment=x"},
			want: []string{"h:p", "/m", "--noexec=false"}},
		{in: []string{"h:p", "/m", "-o", "noexec,offline=false,dir-ttl=5s,cache_size=20G,config=/c.toml,kernel_ttl=0s,op_timeout=3s,connect_timeout=4s"},
			want: []string{"h:p", "/m", "--noexec=true", "--offline=false", "--dir-ttl=5s", "--cache-size=20G", "--config=/c.toml", "--kernel-ttl=0s", "--op-timeout=3s", "--connect-timeout=4s"}},
		{in: []string{"h:p", "/m", "-o", `cache_dir=/a\,b`},
			want: []string{"h:p", "/m", "--cache-dir=/a,b"}},
		// Flags that start with -o are not -o.
		{in: []string{"-offline", "-op-timeout=2s", "h:p", "/m"},
			want: []string{"-offline", "-op-timeout=2s", "h:p", "/m"}},
		{in: []string{"h:p", "/m", "--", "-o"}, want: []string{"h:p", "/m", "--", "-o"}},
		{in: []string{"h:p", "/m", "-o", "bogus"}, err: `unknown mount option "bogus"`},
		{in: []string{"h:p", "/m", "-o", "uid=1000"}, err: `"uid" is not supported`},
		{in: []string{"h:p", "/m", "-o", "sync"}, err: "remotefs flush"},
		{in: []string{"h:p", "/m", "-o", "cache_dir"}, err: "needs a value"},
		{in: []string{"h:p", "/m", "-o", "ro=1"}, err: "takes no value"},
		{in: []string{"h:p", "/m", "-o", "offline=maybe"}, err: "offline=true"},
		{in: []string{"h:p", "/m", "-o"}, err: "-o needs a value"},
	} {
		got, err := ExpandOptions(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one containing %q", tc.in, err, tc.err)
			}
			var ue cli.UsageError
			if err != nil && !errors.As(err, &ue) {
				t.Errorf("%q: %v is not a usage error", tc.in, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q:\n got %q, %v\nwant %q", tc.in, got, err, tc.want)
		}
	}
}

// Every -o option that names a flag names one parseMountFlags defines.
func TestMountOptionsNameRealFlags(t *testing.T) {
	clitest.IsolateEnv(t)
	dir := t.TempDir()
	for name, o := range mountOptions {
		if o.flag == "" {
			continue
		}
		arg := "-o" + name
		if o.value {
			v := "1s"
			switch name {
			case "cache_dir", "ssh_config", "F":
				v = dir
			case "cache_size":
				v = "1G"
			case "config":
				v = filepath.Join(dir, "none.toml")
				os.WriteFile(v, nil, 0o600)
			}
			arg += "=" + v
		}
		_, err := ParseMount([]string{"box:p", dir, arg})
		if err != nil && strings.Contains(err.Error(), "flag provided but not defined") {
			t.Errorf("-o %s: %v", name, err)
		}
	}
}

func TestParseMountFlagsOptions(t *testing.T) {
	clitest.IsolateEnv(t)
	mnt := t.TempDir()
	cfg, err := ParseMount([]string{"box:proj", mnt, "-o", "rw,ro,attr_ttl=2s,cache_size=1G,allow_other,noexec,dev,suid,_netdev"})
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.ReadOnly || cfg.AttrTTL != 2*time.Second || cfg.CacheSize != 1<<30 || !cfg.AllowOther || !cfg.NoExec {
		t.Errorf("got %+v", cfg)
	}
	if cfg.Spec.String() != "box:proj" {
		t.Errorf("spec %v", cfg.Spec)
	}
	// Later options win; flags and -o mix.
	cfg, err = ParseMount([]string{"--attr-ttl=3s", "box:proj", mnt, "-o", "ro", "--read-only=false"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ReadOnly || cfg.AttrTTL != 3*time.Second {
		t.Errorf("got %+v", cfg)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"20G": 20 << 30, "512M": 512 << 20, "1.5T": 3 << 39, "10GiB": 10 << 30, "4096": 4096,
		"10k": 10 << 10, "unlimited": -1, "0": -1, "none": -1, "2gb": 2 << 30,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "lots", "-1G", "1X", "G"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q): no error", in)
		}
	}
}

func TestFixUserEnv(t *testing.T) {
	t.Setenv("HOME", "")
	t.Setenv("USER", "")
	t.Setenv("LOGNAME", "")
	os.Unsetenv("HOME")
	os.Unsetenv("USER")
	os.Unsetenv("LOGNAME")
	FixUserEnv(false)
	if os.Getenv("HOME") == "" || os.Getenv("USER") == "" {
		t.Errorf("HOME=%q USER=%q after fixUserEnv", os.Getenv("HOME"), os.Getenv("USER"))
	}
	t.Setenv("HOME", "/somewhere")
	FixUserEnv(false)
	if os.Getenv("HOME") != "/somewhere" {
		t.Errorf("fixUserEnv replaced a set HOME")
	}
}

// Whatever the -o options, ExpandOptions does not panic, and every
// argument it makes of them is a --flag=value of remotefs mount.
func FuzzExpandOptions(f *testing.F) {
	f.Add("rw,ro,attr_ttl=2s,dev,suid,_netdev")
	f.Add(`cache_dir=/a\,b,x-systemd.automount,comment=x`)
	f.Add("offline=maybe,,F=/x")
	fl := flag.NewFlagSet("mount", flag.ContinueOnError)
	registerFlags(fl, &Mount{})
	f.Fuzz(func(t *testing.T, opts string) {
		out, err := ExpandOptions([]string{"h:p", "/m", "-o", opts})
		if err != nil {
			return
		}
		for _, a := range out[2:] {
			name, _, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			if !strings.HasPrefix(a, "--") || !ok || fl.Lookup(name) == nil {
				t.Fatalf("-o %q made %q", opts, a)
			}
		}
	})
}
