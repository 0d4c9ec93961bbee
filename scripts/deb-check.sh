#!/bin/bash
# make deb-check: the package on a clean Debian 12, as root.
#
# A minimal bookworm made with debootstrap (cached in build/chroot/base; only man-db, zsh and
# bash-completion added, to read what the package ships) is copied afresh for each run. In it:
# the package's dependencies are installed from Debian 12 alone, the tree is listed, the .deb is
# installed with apt, what it ships is checked, it is purged, and the tree must list as before.
#
# Nothing reaches the host: the chroot runs in a mount namespace of its own (its /proc goes
# away with it), services are never started (no systemd runs in there, and policy-rc.d says
# no), and every virtnet command that could touch a network runs in a new network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "make deb-check: run as root (debootstrap, chroot)" >&2
    exit 1
fi
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' src/virtnet/__init__.py)
deb=dist/virtnet_${version}_$(dpkg --print-architecture).deb
[ -f "$deb" ] || { echo "make deb-check: $deb is missing: make deb" >&2; exit 1; }

mirror=http://deb.debian.org/debian
cache=build/chroot
base=$cache/base
work=$cache/work
t0=$(date +%s)
if ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi
if [ ! -e "$base.complete" ]; then
    echo "deb-check: debootstrap bookworm into $base (cached for later runs)"
    rm -rf "$base"
    mkdir -p "$cache"
    unshare --mount --propagation private -- \
        debootstrap --variant=minbase --include=man-db,zsh,bash-completion \
        bookworm "$base" "$mirror"
    # never start a service from a maintainer script in there
    printf '#!/bin/sh\nexit 101\n' > "$base/usr/sbin/policy-rc.d"
    chmod 0755 "$base/usr/sbin/policy-rc.d"
    touch "$base.complete"
fi
t1=$(date +%s)

rm -rf "$work"
cp -a "$base" "$work"
cp /etc/resolv.conf "$work/etc/resolv.conf"
cp "$deb" "$work/tmp/"
debname=$(basename "$deb")
depends=$(dpkg-deb -f "$deb" Depends)

set +e
unshare --mount --propagation private -- bash -euo pipefail -c '
    work=$1
    mount -t proc proc "$work/proc"
    mkdir -p "$work/dev/pts" && mount -t devpts -o newinstance,ptmxmode=0666 devpts "$work/dev/pts"
    exec chroot "$work" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive DEB=/tmp/$2 DEPENDS="$3" \
        bash -euo pipefail -s
' inner "$work" "$debname" "$depends" <<'CHROOT'
fail() { echo "deb-check: FAIL: $*" >&2; exit 1; }
ok() { echo "deb-check: ok: $*"; }
# what purge must give back: every path but the caches, logs and apt's own records
snapshot() {
    find / -xdev \( -path /proc -o -path /tmp -o -path /var/cache -o -path /var/log \
        -o -path /var/lib/apt -o -path /var/lib/dpkg -o -path /root \) -prune -o -print \
        | LC_ALL=C sort
}

apt-get update -qq
# Debian 12 alone serves the dependencies (the chroot's only source is bookworm main)
apt-get satisfy -y -qq "$DEPENDS" >/dev/null
snapshot > /tmp/before
t=$(date +%s)
apt-get install -y -qq "$DEB" >/dev/null
ok "installed with apt in $(( $(date +%s) - t )) s"

[ "$(command -v virtnet)" = /usr/bin/virtnet ] || fail "virtnet is not /usr/bin/virtnet"
[ "$(command -v virtnetd)" = /usr/bin/virtnetd ] || fail "virtnetd is not /usr/bin/virtnetd"
virtnet --version | grep -qx "virtnet, version [0-9.]*" || fail "virtnet --version"
virtnetd --version | grep -qx "virtnetd [0-9.]*" || fail "virtnetd --version"
ok "$(virtnet --version); $(virtnetd --version)"

site=$(echo /usr/lib/virtnet/lib/python3.11/site-packages)
for absent in pyroute2 hypothesis pytest pip setuptools _distutils_hack; do
    [ ! -e "$site/$absent" ] || fail "$absent is in the package"
done
aiohttp=$(/usr/lib/virtnet/bin/python3 -c 'import aiohttp; print(aiohttp.__version__)')
/usr/lib/virtnet/bin/python3 -c 'import aiohttp, sys; v = tuple(map(int, aiohttp.__version__.split(".")[:2])); sys.exit(v < (3, 9))' \
    || fail "aiohttp $aiohttp < 3.9"
ok "no pyroute2, hypothesis, pytest, pip, setuptools; aiohttp $aiohttp"

man -w virtnet >/dev/null && man -w 8 virtnetd >/dev/null || fail "man -w"
# (at a width of 80 columns man-db would keep a formatted copy in /var/cache/man: not at 100)
export MANWIDTH=100
for page in "1 virtnet" "8 virtnetd"; do
    warnings=$(man --warnings $page 2>&1 >/dev/null)
    [ -z "$warnings" ] || fail "man $page: $warnings"
done
man 1 virtnet | grep -q "net-start" || fail "virtnet(1) lacks net-start"
man 8 virtnetd | grep -q -- "--version" || fail "virtnetd(8) lacks --version"
ok "man -w virtnet: $(man -w virtnet); $(man -w 8 virtnetd); no groff warnings"

[ "$(head -1 /usr/share/doc/virtnet/copyright)" = \
  "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/" ] \
    || fail "copyright is not DEP-5"
ls /usr/share/doc/virtnet/examples/default.xml >/dev/null || fail "examples"
ok "copyright (DEP-5), examples: $(ls /usr/share/doc/virtnet/examples | tr '\n' ' ')"

gid=$(getent group virtnet | cut -d: -f3)
[ -n "$gid" ] && [ "$gid" -lt 1000 ] || fail "group virtnet: '${gid}'"
ok "group virtnet, gid $gid"

modes=$(stat -c '%a %U:%G %n' /etc/virtnet /etc/virtnet/networks /etc/virtnet/networks/autostart \
        /var/lib/virtnet /var/lib/virtnet/dnsmasq | tr '\n' ';')
[ "$modes" = "755 root:root /etc/virtnet;700 root:root /etc/virtnet/networks;700 root:root /etc/virtnet/networks/autostart;755 root:root /var/lib/virtnet;755 root:root /var/lib/virtnet/dnsmasq;" ] \
    || fail "modes: $modes"
grep -qx 'd /run/virtnet 0755 root root -' /usr/lib/tmpfiles.d/virtnet.conf || fail "tmpfiles.d"
ok "modes $modes /run/virtnet by tmpfiles.d"

for unit in virtnetd.service virtnetd.socket; do
    [ -f /lib/systemd/system/$unit ] || fail "$unit missing"
done
exec_start=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/virtnetd.service)
[ -x "${exec_start%% *}" ] || fail "ExecStart $exec_start does not exist"
grep -q '^ListenStream=/run/virtnet/virtnetd.sock' /lib/systemd/system/virtnetd.socket \
    || fail "socket unit"
for link in sockets.target.wants/virtnetd.socket multi-user.target.wants/virtnetd.service; do
    [ -L /etc/systemd/system/$link ] || fail "$link not enabled"
done
ok "units: ExecStart=$exec_start exists; socket activation; enabled (*.wants links), not started"

# A definition in the default state, made by virtnet itself (in a network namespace of its
# own, although net-define touches no network), so purge is seen to clean /etc/virtnet.
unshare --net virtnet net-define /usr/share/doc/virtnet/examples/default.xml >/dev/null
unshare --net virtnet net-list --all | grep -q default || fail "net-list"
touch /var/lib/virtnet/dnsmasq/default.leases  # as dnsmasq would leave it

# bash: the loader finds the script; verbs, options and the network names complete
complete_bash() {
    bash -c 'source /usr/share/bash-completion/bash_completion
             _completion_loader virtnet
             COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=()
             _virtnet_completion virtnet 2>/dev/null; echo "${COMPREPLY[*]}"' bash "$@"
}
[ "$(complete_bash virtnet net-st)" = net-start ] || fail "bash: verb"
complete_bash virtnet net-list --al | grep -qw -- --all || fail "bash: option"
[ "$(complete_bash virtnet net-info de)" = default ] || fail "bash: network name"
ok "bash completion: net-st -> net-start, --al -> --all, net-info de -> default"
# zsh: compinit finds _virtnet in Debian's vendor-completions directory
zsh -fc 'autoload -Uz compinit && compinit -u -d /tmp/zcompdump
         [[ ${_comps[virtnet]} == _virtnet ]] && autoload -Uz +X _virtnet' \
    || fail "zsh completion"
ok "zsh completion: compinit maps virtnet to _virtnet"

# The daemon serves (Debian 12's aiohttp 3.8.4 could not): a private one in a namespace.
unshare --net bash -euo pipefail -c '
    state=/tmp/virtnetd-state
    virtnetd --state-dir $state --no-autostart 2>/tmp/virtnetd.log & pid=$!
    for _ in $(seq 100); do [ -S $state/run/virtnetd.sock ] && break; sleep 0.1; done
    out=$(VIRTNET_CLIENT_TIMING=1 virtnet --state-dir $state net-list --all 2>&1)
    kill $pid; wait $pid || true
    rm -rf $state
    grep -q "\"forwarded\": *true" <<<"$out" || { echo "$out"; cat /tmp/virtnetd.log; exit 1; }
' || fail "virtnetd did not serve"
ok "virtnetd served net-list on its socket (forwarded), then stopped"

# Nothing was compiled at run time: every file under /usr/lib/virtnet is the package's.
runtime=$(comm -23 <(find /usr/lib/virtnet -type f | sort) <(dpkg -L virtnet | sort))
[ -z "$runtime" ] || fail "files made at run time: $runtime"
ok "no file under /usr/lib/virtnet but the package's ($(dpkg -L virtnet | wc -l) paths)"

t=$(date +%s)
apt-get purge -y -qq virtnet >/dev/null
ok "purged in $(( $(date +%s) - t )) s"
snapshot > /tmp/after
if ! diff /tmp/before /tmp/after; then fail "purge left the tree changed (above: < gone, > left)"; fi
left=$(find / -xdev \( -path /proc -o -path /tmp \) -prune -o -name '*virtnet*' -print)
[ -z "$left" ] || fail "left after purge: $left"
ok "after purge the tree lists as before install: no file, *.wants link or state left"
getent group virtnet >/dev/null && ok "group virtnet stays (Debian's way for system groups)"
CHROOT
status=$?
set -e
t2=$(date +%s)
rm -rf "$work"
if [ $status != 0 ]; then
    echo "deb-check: FAILED" >&2
    exit $status
fi
echo "deb-check: passed; $(du -k "$deb" | cut -f1) KiB .deb; chroot base $((t1 - t0)) s" \
     "(0 when cached); check $((t2 - t1)) s"
