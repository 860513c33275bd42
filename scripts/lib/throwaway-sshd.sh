# throwaway-sshd.sh: a private OpenSSH sshd on loopback for the demo and
# the pjdfstest run; sourced, not run.
#
# throwaway_sshd DIR ALIAS USER starts sshd with its own host key and
# config under DIR/sshd, a client HOME under DIR/home whose .ssh/config
# names it ALIAS (logging in as USER with a new key, the host key pinned
# in known_hosts), and waits until `ssh -F DIR/home/.ssh/config ALIAS`
# works. It sets sshd_pid (for the caller's clean-up, as soon as sshd
# runs) and sshd_port; on failure it says why on stderr and returns 1.
throwaway_sshd() {
  local dir=$1 alias=$2 user=$3 sftp_server="" f i
  mkdir -p "$dir/sshd" "$dir/home/.ssh"
  chmod 0700 "$dir/home/.ssh"
  ssh-keygen -q -N '' -t ed25519 -C "$alias-host" -f "$dir/sshd/host_ed25519"
  ssh-keygen -q -N '' -t ed25519 -C "$alias-user" -f "$dir/home/.ssh/id_ed25519"
  cp "$dir/home/.ssh/id_ed25519.pub" "$dir/sshd/authorized_keys"
  for f in /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server /usr/libexec/sftp-server /usr/lib/ssh/sftp-server; do
    if [ -x "$f" ]; then sftp_server=$f; break; fi
  done
  [ -n "$sftp_server" ] || { echo "no sftp-server found (install openssh-sftp-server)" >&2; return 1; }
  [ -x /usr/sbin/sshd ] || { echo "no /usr/sbin/sshd (install openssh-server)" >&2; return 1; }
  sshd_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat >"$dir/sshd/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $sshd_port
HostKey $dir/sshd/host_ed25519
AuthorizedKeysFile $dir/sshd/authorized_keys
PidFile $dir/sshd/sshd.pid
StrictModes no
UsePAM no
PasswordAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
Subsystem sftp $sftp_server
EOF
  if [ "$(id -u)" -eq 0 ] && [ ! -d /run/sshd ]; then
    mkdir -m 0755 /run/sshd # sshd's privilege-separation directory
  fi
  /usr/sbin/sshd -t -f "$dir/sshd/sshd_config" || { echo "sshd rejected its config" >&2; return 1; }
  /usr/sbin/sshd -D -e -f "$dir/sshd/sshd_config" </dev/null >"$dir/sshd/sshd.log" 2>&1 &
  sshd_pid=$!
  cat >"$dir/home/.ssh/config" <<EOF
Host $alias
    HostName 127.0.0.1
    Port $sshd_port
    User $user
    IdentityFile $dir/home/.ssh/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $dir/home/.ssh/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
EOF
  chmod 0600 "$dir/home/.ssh/config"
  echo "[127.0.0.1]:$sshd_port $(cut -d' ' -f1,2 "$dir/sshd/host_ed25519.pub")" >"$dir/home/.ssh/known_hosts"
  # ssh reads ~ from the password database, not $HOME: name the config.
  for i in $(seq 1 50); do
    kill -0 "$sshd_pid" 2>/dev/null || { echo "sshd exited" >&2; return 1; }
    if ssh -F "$dir/home/.ssh/config" -o ConnectTimeout=2 "$alias" true </dev/null 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  ssh -F "$dir/home/.ssh/config" "$alias" true </dev/null || true
  echo "cannot log in to sshd on 127.0.0.1:$sshd_port" >&2
  return 1
}
