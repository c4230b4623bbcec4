#!/usr/bin/env bash
# arm64.sh build|start|stop|status|install: an ARM64 "board" on this x86 machine, under QEMU user-mode
# emulation, reached over ssh on 127.0.0.1 exactly as a real board would be.
#
#   build    Debian bookworm arm64 root (debootstrap), python3 + sshd in it, the project's wheel (base
#            install, no extras) in /opt/venv, an ssh key made for it. ~8 minutes and ~700 MB the first
#            time; every step is skipped when done, so re-running only refreshes the wheel.
#   install  rebuild the project's wheel from this checkout and reinstall it in the root (seconds).
#   start    mount proc/sys/dev and the fake aarch64 cpuinfo, start the root's sshd on 127.0.0.1.
#   stop     stop that sshd, unmount everything under the root.
#   status   say what exists and whether the board answers: exit 0 when it answers over ssh, 1 when it is
#            built but does not answer, 3 when there is no root.
#   url      print the --device / --ssh-key / --remote-python flags that reach it.
#
# Needs root (debootstrap, chroot, mount). Traps, as measured here (../shared/TOOLCHAIN.md):
#   - binfmt_misc is not mounted at first; qemu-aarch64 must be enabled in it.
#   - LiteRT dies (SIGSEGV) when the guest reads the host's x86 /proc/cpuinfo: an aarch64 one is bind-mounted.
#   - QEMU's default "max" CPU gives wrong int8 outputs; cortex-a72 lacks ARMv8.2 (SIGILL). QEMU_CPU is set
#     to cortex-a76 for sshd and, through sshd's SetEnv, for every session.
#   - The host's PIP_CERT points at a path that holds another bundle inside the root: pip in the root runs
#     with a clean environment and its own /etc/pip.conf naming a copy of the host's bundle.
set -euo pipefail

ROOT=${EDGECIFAR_ARM64_ROOT:-$HOME/edgecifar-runs/arm64-root}
PORT=${EDGECIFAR_ARM64_PORT:-2222}
CPU=${EDGECIFAR_ARM64_CPU:-cortex-a76}
SUITE=bookworm
KEYDIR=$ROOT.ssh              # the client key stays outside the root
KEY=$KEYDIR/id_ed25519
CHECKOUT=$(cd "$(dirname "$0")/../.." && pwd)
GUEST_PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
PIDFILE=/run/sshd-edgecifar.pid    # inside the root

say() { echo "arm64: $*"; }
die() { echo "arm64: $*" >&2; exit 1; }
# A command inside the root with a clean environment (no host PIP_CERT, no host PATH).
guest() { chroot "$ROOT" /usr/bin/env -i PATH="$GUEST_PATH" HOME=/root LANG=C.UTF-8 QEMU_CPU="$CPU" "$@"; }

need_root() { [ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot and mount)"; }

host_packages() {
    local missing=()
    command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
    command -v update-binfmts >/dev/null || missing+=(binfmt-support)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || missing+=(openssh-client)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing on the host: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

binfmt() {
    mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
    grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "binfmt qemu-aarch64 is not enabled"
}

mirror() {
    # The first Debian mirror the host's apt uses (a "deb.sources" or a classic sources.list).
    local uri
    uri=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1)
    [ -n "$uri" ] || uri=$(grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -1)
    echo "${EDGECIFAR_ARM64_MIRROR:-${uri:-http://deb.debian.org/debian}}"
}

fake_cpuinfo() {
    # What an aarch64 kernel shows for a Cortex-A76 (part 0xd0b), one entry per host core.
    local n i
    n=$(nproc)
    for ((i = 0; i < n; i++)); do
        printf 'processor\t: %d\nBogoMIPS\t: 50.00\n' "$i"
        printf 'Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n'
        printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n'
    done
}

mount_all() {
    binfmt
    mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
    mountpoint -q "$ROOT/sys" || mount -t sysfs sysfs "$ROOT/sys"
    mountpoint -q "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
    mountpoint -q "$ROOT/dev/pts" || mount --bind /dev/pts "$ROOT/dev/pts"
    fake_cpuinfo > "$ROOT/etc/edgecifar-cpuinfo"
    grep -q '^CPU part' "$ROOT/proc/cpuinfo" 2>/dev/null || mount --bind "$ROOT/etc/edgecifar-cpuinfo" "$ROOT/proc/cpuinfo"
}

umount_all() {
    local m
    # Deepest first; the cpuinfo bind sits on the proc mount.
    for m in "$ROOT/proc/cpuinfo" "$ROOT/proc" "$ROOT/dev/pts" "$ROOT/dev" "$ROOT/sys"; do
        while mountpoint -q "$m" 2>/dev/null || grep -q " $m " /proc/mounts; do
            umount "$m" 2>/dev/null || umount -l "$m"
        done
    done
}

sshd_pid() {
    local pid
    pid=$(cat "$ROOT$PIDFILE" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# ------------------------------------------------------------------------------------------- build

build_root() {
    if [ ! -e "$ROOT/.edgecifar-stage1" ]; then
        say "debootstrap first stage ($SUITE arm64 from $(mirror)) into $ROOT"
        rm -rf "$ROOT"; mkdir -p "$(dirname "$ROOT")"
        debootstrap --arch=arm64 --foreign "$SUITE" "$ROOT" "$(mirror)"
        touch "$ROOT/.edgecifar-stage1"
    fi
    cp /usr/bin/qemu-aarch64-static "$ROOT/usr/bin/"
    if [ ! -e "$ROOT/.edgecifar-stage2" ]; then
        say "debootstrap second stage (emulated: about 4 minutes)"
        binfmt
        chroot "$ROOT" /usr/bin/env -i PATH="$GUEST_PATH" QEMU_CPU="$CPU" /debootstrap/debootstrap --second-stage
        touch "$ROOT/.edgecifar-stage2"
    fi
    mount_all
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
    if [ ! -e "$ROOT/.edgecifar-packages" ]; then
        say "apt-get install python3 python3-venv openssh-server in the root (about 2 minutes)"
        if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
            cp /etc/apt/sources.list.d/*.sources "$ROOT/etc/apt/sources.list.d/"
            : > "$ROOT/etc/apt/sources.list"
        fi
        guest apt-get update -qq
        guest env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            python3 python3-venv python3-pip ca-certificates openssh-server >/dev/null
        guest apt-get clean
        touch "$ROOT/.edgecifar-packages"
    fi
    # pip inside the root trusts what the host's pip trusts (a TLS-inspecting proxy's CA, if any).
    cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$ROOT/etc/edgecifar-host-ca.crt"
    printf '[global]\ncert = /etc/edgecifar-host-ca.crt\ntimeout = 180\ndisable-pip-version-check = true\n' \
        > "$ROOT/etc/pip.conf"
    [ -x "$ROOT/opt/venv/bin/python" ] || { say "python3 -m venv /opt/venv"; guest python3 -m venv /opt/venv; }
    ssh_setup
}

ssh_setup() {
    mkdir -p "$KEYDIR" "$ROOT/root/.ssh" "$ROOT/run/sshd"
    chmod 700 "$KEYDIR" "$ROOT/root/.ssh"
    [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C edgecifar-arm64 -f "$KEY"
    cp "$KEY.pub" "$ROOT/root/.ssh/authorized_keys"
    chmod 600 "$ROOT/root/.ssh/authorized_keys"
    ls "$ROOT"/etc/ssh/ssh_host_*_key >/dev/null 2>&1 || guest ssh-keygen -A
    cat > "$ROOT/etc/ssh/sshd_config.d/edgecifar.conf" <<EOF
# Written by bench/board/arm64.sh: key login only, loopback only, every session under the right CPU model.
ListenAddress 127.0.0.1
Port $PORT
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile $PIDFILE
SetEnv QEMU_CPU=$CPU
EOF
}

install_wheel() {
    [ -x "$ROOT/opt/venv/bin/python" ] || die "no root at $ROOT: run '$0 build' first"
    local dist=$ROOT/tmp/edgecifar-wheel py
    rm -rf "$dist"; mkdir -p "$dist"
    py=$CHECKOUT/.venv/bin/python; [ -x "$py" ] || py=python3
    # Built from a copy of the checkout's files (tracked and new, not ignored), so the build leaves
    # nothing behind in the work tree.
    local src; src=$(mktemp -d)
    (cd "$CHECKOUT" && git ls-files -z -co --exclude-standard | xargs -0 tar -c) | tar -x -C "$src"
    say "building the wheel from $CHECKOUT"
    (cd "$src" && "$py" -m pip wheel --quiet --no-deps --wheel-dir "$dist" .) \
        || { rm -rf "$src"; die "pip wheel failed in $CHECKOUT"; }
    rm -rf "$src"
    local wheel; wheel=$(cd "$dist" && ls edgecifar-*.whl | head -1)
    [ -n "$wheel" ] || die "no edgecifar wheel was built"
    mount_all
    say "pip install $wheel in /opt/venv (base install: numpy, click, pillow, rich, ai-edge-litert)"
    guest /opt/venv/bin/pip install --quiet "/tmp/edgecifar-wheel/$wheel"
    guest /opt/venv/bin/pip install --quiet --no-deps --force-reinstall "/tmp/edgecifar-wheel/$wheel"
    rm -rf "$dist"
}

# ------------------------------------------------------------------------------------------- run

start() {
    [ -x "$ROOT/usr/sbin/sshd" ] || die "no board at $ROOT: run '$0 build' (or 'make arm64-board') first"
    if pid=$(sshd_pid); then say "sshd already running (pid $pid) on 127.0.0.1:$PORT"; return 0; fi
    mount_all
    ssh_setup
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        die "port $PORT on 127.0.0.1 is taken by another program (set EDGECIFAR_ARM64_PORT)"
    fi
    guest /usr/sbin/sshd
    local i
    for i in $(seq 1 60); do
        if ssh_check >/dev/null 2>&1; then say "up: ssh://root@127.0.0.1:$PORT ($(ssh_check))"; return 0; fi
        sleep 1
    done
    die "sshd did not answer on 127.0.0.1:$PORT within 60 s"
}

stop() {
    local pid i
    if pid=$(sshd_pid); then
        kill "$pid"
        for i in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        say "sshd (pid $pid) stopped"
    fi
    [ -d "$ROOT" ] && umount_all
    return 0
}

ssh_check() {
    ssh -i "$KEY" -p "$PORT" -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=10 root@127.0.0.1 \
        'echo "$(uname -m) QEMU_CPU=$QEMU_CPU $(/opt/venv/bin/python -c "import edgecifar; print(\"edgecifar\", edgecifar.__version__)" 2>&1 | tail -1)"'
}

status() {
    if [ ! -x "$ROOT/usr/sbin/sshd" ]; then say "root: none at $ROOT ('$0 build' or 'make arm64-board')"; return 3; fi
    say "root: $ROOT ($(du -sh -x "$ROOT" 2>/dev/null | cut -f1))"
    [ -x "$ROOT/opt/venv/bin/edgecifar" ] && say "edgecifar installed in /opt/venv" || say "edgecifar not installed in the root"
    if pid=$(sshd_pid); then
        say "sshd: pid $pid on 127.0.0.1:$PORT"
        if out=$(ssh_check 2>&1); then say "answers: $out"; return 0; fi
        say "does not answer: $out"
    else
        say "sshd: not running"
    fi
    return 1
}

url() {
    echo "--device ssh://root@127.0.0.1:$PORT --ssh-key $KEY --remote-python /opt/venv/bin/python"
}

case "${1:-}" in
    build) need_root; host_packages; build_root; install_wheel; say "built: $ROOT ('$0 start' to boot it)" ;;
    install) need_root; install_wheel ;;
    start) need_root; start ;;
    stop) need_root; stop ;;
    status) status ;;
    url) url ;;
    *) echo "usage: $0 build|install|start|stop|status|url" >&2; exit 2 ;;
esac
