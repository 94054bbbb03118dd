#!/usr/bin/env bash
# bench/peers/run.sh: forkmail beside Dovecot (IMAP) and OpenSSH, on 127.0.0.1, in one run.
#
# Installs dovecot-imapd and openssh-server from Debian's packages if they are missing (without
# starting their system services), writes their configurations into a temporary directory,
# runs them there as throw-away processes on free ports, creates the users, and runs
# forkmail-peers, which times both sides interleaved and prints forkmail / peer ratios.
# Every process it started is stopped and the directory removed when it exits, however it exits.
#
#   cargo build --release --bins && sudo bench/peers/run.sh
#
# Environment: FORKMAIL_BIN_DIR (default target/release, or $CARGO_TARGET_DIR/release),
# ROUNDS (interleaved rounds of each pair, default 30). Exit 0 when the run completed, 1 when
# something could not be installed, started or measured.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${FORKMAIL_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
ROUNDS=${ROUNDS:-30}
PASSWORD="peers-password-1"

say() { echo "run.sh: $*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root: Dovecot and sshd start as root and drop privileges"
for b in forkmail-peers forkmail-server forkmail; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing; build with: cargo build --release --bins (or set FORKMAIL_BIN_DIR)"
done

# --- install, without letting the packages start system services ------------------------
install_peers() {
    local policy=/usr/sbin/policy-rc.d made_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && made_policy=1
    fi
    local ok=0
    apt-get update -q >&2 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            dovecot-imapd openssh-server openssh-client >&2 || ok=1
    [ -n "$made_policy" ] && rm -f "$policy"
    return $ok
}
if ! command -v dovecot >/dev/null || ! command -v doveadm >/dev/null || [ ! -x /usr/sbin/sshd ] \
    || ! command -v ssh >/dev/null; then
    say "installing dovecot-imapd and openssh-server from Debian's packages"
    install_peers || die "cannot install dovecot-imapd and openssh-server with apt-get; install them and run again"
fi
command -v dovecot >/dev/null && [ -x /usr/sbin/sshd ] || die "dovecot or sshd is still missing after apt-get install"

# --- a temporary directory, and clean-up of everything started --------------------------
T=$(mktemp -d /tmp/forkmail-peers.XXXXXX)
chmod 755 "$T"
PIDS=()
MADE_RUN_SSHD=
SSH_USER=forkmail-peers
MADE_SSH_USER=
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    [ -n "$MADE_RUN_SSHD" ] && rmdir /run/sshd 2>/dev/null
    [ -n "$MADE_SSH_USER" ] && userdel "$SSH_USER" 2>/dev/null
    [ -n "${KEEP_TMP:-}" ] && { say "kept $T"; return; }
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# A port nobody listens on (checked by connecting; the servers bind it a moment later).
free_port() {
    local port
    for _ in $(seq 100); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
    done
    die "no free port found on 127.0.0.1"
}
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    die "$2 did not listen on 127.0.0.1:$1 within 10 s; see its log above"
}

# --- Dovecot: passwd-file users with SHA512-CRYPT and ARGON2ID hashes, maildirs -----------
IMAP_PORT=$(free_port)
D=$T/dovecot
mkdir -p "$D/run" "$D/state" "$T/mail"
sha=$(doveadm pw -s SHA512-CRYPT -p "$PASSWORD")
argon=$(doveadm pw -s ARGON2ID -p "$PASSWORD")
{
    for u in sha big large writer; do echo "$u:$sha::::::"; done
    echo "argon:$argon::::::"
} > "$D/passwd"
chown root:dovecot "$D/passwd"; chmod 640 "$D/passwd"   # read by the auth worker (user dovecot)
"$BIN/forkmail-peers" --fill-maildir "$T/mail/sha/Maildir" 10 1000
"$BIN/forkmail-peers" --fill-maildir "$T/mail/argon/Maildir" 10 1000
"$BIN/forkmail-peers" --fill-maildir "$T/mail/big/Maildir" 10000 1000
"$BIN/forkmail-peers" --fill-maildir "$T/mail/large/Maildir" 1 1000000
"$BIN/forkmail-peers" --fill-maildir "$T/mail/writer/Maildir" 0 1000
chown -R nobody:nogroup "$T/mail"
cat > "$D/dovecot.conf" <<CONF
# Written by bench/peers/run.sh: Dovecot's defaults but for where things are.
protocols = imap
listen = 127.0.0.1
base_dir = $D/run
state_dir = $D/state
instance_name = forkmail-peers-$$
log_path = $D/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:$T/mail/%u/Maildir
first_valid_uid = 1
passdb {
  driver = passwd-file
  args = $D/passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$T/mail/%u
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    port = 0
  }
}
CONF
dovecot -F -c "$D/dovecot.conf" &
PIDS+=($!)
wait_port "$IMAP_PORT" "Dovecot" || { cat "$D/dovecot.log" >&2; exit 1; }

# --- sshd: a host key, one user key (ed25519, OpenSSH's default), a throw-away user --------
# The user's shell is /bin/sh and its home is empty: `ssh true` then measures sshd and the
# protocol, not some login shell's start-up files (root's .bashrc here forks dozens of times).
SSH_PORT=$(free_port)
if ! id "$SSH_USER" >/dev/null 2>&1; then
    # Password "*": no password login, but not "!" (locked), which sshd refuses even with a key.
    useradd --system --no-create-home --home-dir "$T/ssh-home" --shell /bin/sh -p "*" "$SSH_USER" \
        || die "cannot create the user $SSH_USER for sshd"
    MADE_SSH_USER=1
fi
S=$T/ssh
mkdir -p "$S" "$T/ssh-home"
ssh-keygen -q -t ed25519 -N '' -C forkmail-peers-host -f "$S/host_ed25519"
ssh-keygen -q -t ed25519 -N '' -C forkmail-peers-user -f "$S/id_ed25519"
cp "$S/id_ed25519.pub" "$S/authorized_keys"
echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$S/host_ed25519.pub")" > "$S/known_hosts"
cat > "$S/sshd_config" <<CONF
# Written by bench/peers/run.sh.
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $S/host_ed25519
PidFile $S/sshd.pid
AuthorizedKeysFile $S/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers $SSH_USER
UsePAM no
StrictModes no
CONF
if [ ! -d /run/sshd ]; then mkdir -p /run/sshd && chmod 755 /run/sshd && MADE_RUN_SSHD=1; fi
/usr/sbin/sshd -D -e -f "$S/sshd_config" 2>"$S/sshd.log" &
PIDS+=($!)
wait_port "$SSH_PORT" "sshd" || { cat "$S/sshd.log" >&2; exit 1; }

# --- the run -----------------------------------------------------------------------------
echo "bench/peers/run.sh, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) CPUs, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1), $(uname -sr), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
echo "peers: Dovecot $(dovecot --version | cut -d' ' -f1) (maildir, default fsync), $(ssh -V 2>&1 | cut -d, -f1) (ed25519 key); forkmail RSA-3072, SQLite"
echo "Dovecot ARGON2ID: $(echo "$argon" | cut -d'$' -f1-4 | sed 's/^{ARGON2ID}//'); SHA512-CRYPT: $(echo "$sha" | cut -d'$' -f2 | sed 's/^/\$/')\$ (5,000 rounds)"
"$BIN/forkmail-peers" --imap-port "$IMAP_PORT" --imap-password "$PASSWORD" \
    --ssh-port "$SSH_PORT" --ssh-key "$S/id_ed25519" --ssh-user "$SSH_USER" \
    --ssh-known-hosts "$S/known_hosts" --rounds "$ROUNDS" --work-dir "$T"
