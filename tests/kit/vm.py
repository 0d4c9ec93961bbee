"""Real guests for the real-VM tests: Debian 12's kernel and a busybox initramfs under QEMU.

Nothing here is committed as a binary: the kernel package and busybox-static are fetched with
``apt-get download`` (the host's configured archive, read only; nothing is installed) into a
cache directory, unpacked with ``dpkg-deb -x``, and the initramfs (busybox, the virtio network
modules and a small init) is written by this module as a gzipped newc cpio archive. Build once,
reused by every test (the cache key is the kernel's version).

The guest's init brings every ethN up, asks for a lease on each with busybox's own DHCP client
(udhcpc), pings the addresses the test named on the kernel command line, optionally stays up
for a while (so another guest can reach it), and powers off. Everything it learns it prints on
the serial console as ``VT-`` lines, which :func:`boot` parses:

    VT-BOOTED
    VT-QUEUES eth0 rx=4 tx=4
    VT-LEASE eth0 192.168.122.57 24 router=192.168.122.1 mtu= up=9.81
    VT-PING 192.168.122.1 ok
    VT-DONE

Guests run where the test says (``ip netns exec NS``), as root or as another uid; QEMU emulates
the CPU (TCG: about 8 s from power-on to init here) unless VIRTNET_VM_ACCEL=kvm.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("VIRTNET_CACHE_DIR", Path.home() / ".cache" / "virtnet")) / "vm"
KERNEL_META = "linux-image-amd64"
BUSYBOX = "busybox-static"
QEMU = "qemu-system-x86_64"
# the modules a virtio-net guest needs on Debian 12's kernel (virtio itself is modular there)
ROOT_MODULES = ("virtio_pci.ko", "virtio_net.ko")
BOOT_TIMEOUT_S = 240.0

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m 2>/dev/null; done
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^vt\.$1=//p"; }
echo VT-BOOTED
ip link set lo up
for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/class/net/eth0 ] && break; sleep 0.5; done
for path in /sys/class/net/eth*; do
  dev=${path##*/}
  rx=$(ls -d $path/queues/rx-* 2>/dev/null | wc -l)
  tx=$(ls -d $path/queues/tx-* 2>/dev/null | wc -l)
  echo "VT-QUEUES $dev rx=$rx tx=$tx"
  ip link set $dev up
  udhcpc -i $dev -n -q -f -t 20 -T 2 -A 1 -s /udhcpc.sh >/dev/null 2>&1 || echo "VT-NOLEASE $dev"
done
tries=$(arg tries)
for target in $(arg ping | tr ',' ' '); do
  verdict=fail
  for try in $(seq ${tries:-1}); do
    if ping -c 3 -W 3 $target >/dev/null 2>&1; then verdict=ok; break; fi
  done
  echo "VT-PING $target $verdict"
done
hold=$(arg hold)
[ -n "$hold" ] && sleep $hold
echo VT-DONE
poweroff -f
"""

UDHCPC = r"""#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev $interface ;;
  bound|renew)
    ip addr add $ip/${mask:-24} dev $interface
    [ -n "$mtu" ] && ip link set $interface mtu $mtu
    for r in $router; do ip route add default via $r dev $interface; break; done
    read up idle < /proc/uptime
    echo "VT-LEASE $interface $ip ${mask:-24} router=$router mtu=$mtu up=$up" > /dev/console ;;
esac
exit 0
"""


class GuestKitError(RuntimeError):
    """The guest kit cannot be built here (no apt, no QEMU...): the tests skip with this."""


@dataclass(frozen=True)
class GuestKit:
    kernel: Path
    initramfs: Path
    version: str


def _run(argv: Sequence[str], cwd: Path | None = None, timeout: float = 300) -> str:
    proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise GuestKitError(f"{' '.join(argv)} failed: {proc.stderr.strip()[-400:]}")
    return proc.stdout


def _download(package: str, into: Path) -> Path:
    """The .deb of PACKAGE, fetched once into INTO."""
    found = sorted(into.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    if shutil.which("apt-get") is None:
        raise GuestKitError("apt-get is not available to fetch " + package)
    _run(["apt-get", "download", "-q", package], cwd=into)
    found = sorted(into.glob(f"{package}_*.deb"))
    if not found:
        raise GuestKitError(f"apt-get download {package} left no .deb in {into}")
    return found[-1]


def _kernel_package() -> str:
    """The versioned kernel package the linux-image-amd64 metapackage depends on."""
    out = _run(["apt-cache", "depends", KERNEL_META])
    for line in out.splitlines():
        if match := re.match(r"\s*Depends:\s*(linux-image-\S+)", line):
            return match.group(1)
    raise GuestKitError(f"cannot tell which kernel {KERNEL_META} depends on")


def _module_closure(moddir: Path, roots: Iterable[str]) -> list[str]:
    """Module paths (relative to MODDIR) of ROOTS and what they need, dependencies first.
    The package ships no modules.dep (depmod writes it when installed): each module's own
    ``depends=`` line in its .modinfo section says what it needs."""
    by_name = {}
    for path in moddir.rglob("*.ko*"):
        by_name[path.name.split(".ko")[0].replace("-", "_")] = path
    order: list[str] = []

    def visit(name: str) -> None:
        path = by_name.get(name)
        if path is None:
            raise GuestKitError(f"module {name} is not in the kernel package")
        rel = str(path.relative_to(moddir))
        if rel in order:
            return
        data = path.read_bytes()
        if path.suffix == ".xz":
            import lzma

            data = lzma.decompress(data)
        match = re.search(rb"depends=([^\0]*)", data)
        for dep in (match.group(1).decode().split(",") if match else []):
            if dep:
                visit(dep.replace("-", "_"))
        order.append(rel)

    for root in roots:
        visit(root.removesuffix(".ko"))
    return order


def _cpio(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (name, mode, data) entries (directories have no data)."""
    out = bytearray()

    def add(name: str, mode: int, data: bytes, ino: int) -> None:
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for number, (name, mode, data) in enumerate(entries, start=1):
        add(name, mode, data, number)
    add("TRAILER!!!", 0, b"", 0)
    return bytes(out)


def build_kit(cache: Path = CACHE) -> GuestKit:
    """The kernel and initramfs, built into CACHE on first use."""
    cache.mkdir(parents=True, exist_ok=True)
    package = _kernel_package()
    version = package.removeprefix("linux-image-")
    recipe = hashlib.sha256((INIT + UDHCPC + repr(ROOT_MODULES)).encode()).hexdigest()[:12]
    kernel = cache / f"vmlinuz-{version}"
    initramfs = cache / f"initramfs-{version}-{recipe}.gz"  # a new init makes a new one
    if kernel.exists() and initramfs.exists():
        return GuestKit(kernel, initramfs, version)
    debs = cache / "debs"
    debs.mkdir(exist_ok=True)
    kernel_deb, busybox_deb = _download(package, debs), _download(BUSYBOX, debs)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        root = Path(tmp)
        _run(["dpkg-deb", "-x", str(kernel_deb), str(root / "k")])
        _run(["dpkg-deb", "-x", str(busybox_deb), str(root / "b")])
        moddir = root / "k" / "lib" / "modules" / version
        modules = _module_closure(moddir, ROOT_MODULES)
        entries: list[tuple[str, int, bytes]] = [
            (d, 0o040755, b"") for d in ("bin", "dev", "proc", "sys", "etc", "lib",
                                         "lib/modules", "tmp")]
        entries.append(("bin/busybox", 0o100755, (root / "b" / "bin" / "busybox").read_bytes()))
        for path in modules:
            data = (moddir / path).read_bytes()
            if path.endswith(".xz"):
                import lzma

                data, path = lzma.decompress(data), path[:-3]
            entries.append((f"lib/modules/{Path(path).name}", 0o100644, data))
        order = "\n".join(Path(p).name.removesuffix(".xz") for p in modules) + "\n"
        entries += [("modules.order", 0o100644, order.encode()),
                    ("init", 0o100755, INIT.encode()),
                    ("udhcpc.sh", 0o100755, UDHCPC.encode())]
        staged_kernel = root / "vmlinuz"
        shutil.copyfile(root / "k" / "boot" / f"vmlinuz-{version}", staged_kernel)
        staged_initramfs = root / "initramfs.gz"
        staged_initramfs.write_bytes(gzip.compress(_cpio(entries), mtime=0))
        os.replace(staged_kernel, kernel)
        os.replace(staged_initramfs, initramfs)
    return GuestKit(kernel, initramfs, version)


def accelerator() -> str:
    """QEMU's accelerator: TCG unless VIRTNET_VM_ACCEL says otherwise. /dev/kvm is not proof
    that KVM works: on this project's machines (themselves VMs) it exists, and QEMU then
    either hangs before the kernel prints anything or aborts setting an MSR."""
    return os.environ.get("VIRTNET_VM_ACCEL", "tcg")


@dataclass
class Nic:
    """One guest interface: QEMU's ``-netdev`` options (without id) and the guest's MAC."""

    netdev: str
    mac: str
    queues: int = 1

    def args(self, index: int) -> list[str]:
        device = f"virtio-net-pci,netdev=n{index},mac={self.mac}"
        if self.queues > 1:
            device += f",mq=on,vectors={2 * self.queues + 2}"
        return ["-netdev", f"{self.netdev},id=n{index}", "-device", device]


@dataclass
class Result:
    console: str
    elapsed: float
    returncode: int | None
    leases: dict[str, str] = field(default_factory=dict)
    pings: dict[str, bool] = field(default_factory=dict)
    queues: dict[str, tuple[int, int]] = field(default_factory=dict)
    first_lease_s: float | None = None

    @property
    def done(self) -> bool:
        return "VT-DONE" in self.console


def qemu_argv(kit: GuestKit, nics: Sequence[Nic], *, ping: Sequence[str] = (),
              hold: int = 0, tries: int = 1, memory_mb: int = 256, smp: int = 1) -> list[str]:
    append = f"console=ttyS0 panic=-1 quiet loglevel=3 vt.tries={tries}"
    if ping:
        append += " vt.ping=" + ",".join(ping)
    if hold:
        append += f" vt.hold={hold}"
    argv = [QEMU, "-accel", accelerator(), "-m", str(memory_mb),
            "-smp", str(smp), "-nodefaults", "-no-user-config", "-display", "none",
            "-serial", "stdio", "-no-reboot", "-kernel", str(kit.kernel),
            "-initrd", str(kit.initramfs), "-append", append]
    for index, nic in enumerate(nics):
        argv += nic.args(index)
    return argv


def parse_console(text: str, result: Result) -> None:
    for line in text.splitlines():
        words = line.strip().split()
        if not words:
            continue
        if words[0] == "VT-LEASE" and len(words) >= 3:
            result.leases[words[1]] = words[2]
            up = [w.split("=", 1)[1] for w in words if w.startswith("up=")]
            if up and result.first_lease_s is None:
                result.first_lease_s = float(up[0])  # the guest's own clock: kernel start
        elif words[0] == "VT-PING" and len(words) >= 3:
            result.pings[words[1]] = words[2] == "ok"
        elif words[0] == "VT-QUEUES" and len(words) >= 4:
            result.queues[words[1]] = (int(words[2].split("=")[1]), int(words[3].split("=")[1]))


class Guest:
    """A running QEMU guest (started by :func:`start`), its console read to the end by wait()."""

    def __init__(self, argv: list[str], prefix: Sequence[str] = (),
                 pass_fds: Sequence[int] = (), env: dict[str, str] | None = None) -> None:
        self.argv = [*prefix, *argv]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     pass_fds=tuple(pass_fds), env=env)
        self.lines: list[tuple[float, str]] = []

    def wait(self, timeout: float = BOOT_TIMEOUT_S) -> Result:
        import selectors

        assert self.proc.stdout is not None
        deadline = self.started + timeout
        buffer = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not sel.select(timeout=max(0.0, min(1.0, deadline - time.monotonic()))):
                    if self.proc.poll() is not None:
                        break
                    continue
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                buffer += chunk
                *whole, buffer = buffer.split(b"\n")
                now = time.monotonic() - self.started
                self.lines += [(now, w.decode(errors="replace").rstrip("\r")) for w in whole]
        self.stop()
        text = "\n".join(line for _, line in self.lines) + "\n" + buffer.decode(errors="replace")
        result = Result(console=text, elapsed=time.monotonic() - self.started,
                        returncode=self.proc.returncode)
        parse_console(text, result)
        return result

    def stop(self) -> None:
        """End QEMU (ours, by its pid) if it is still running."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start(kit: GuestKit, nics: Sequence[Nic], *, netns: str | None = None,
          ping: Sequence[str] = (), hold: int = 0, pass_fds: Sequence[int] = (),
          user: int | None = None, **kwargs: int) -> Guest:
    """Start a guest with NICS inside NETNS (as uid USER when given); PASS_FDS are inherited
    (a macvtap's or a handed-over tap's descriptor for ``tap,fd=N``)."""
    prefix: list[str] = ["ip", "netns", "exec", netns] if netns else []
    if user is not None:
        prefix += ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    return Guest(qemu_argv(kit, nics, ping=ping, hold=hold, **kwargs), prefix, pass_fds)


def boot(kit: GuestKit, nics: Sequence[Nic], **kwargs: object) -> Result:
    """Start a guest and wait until it powered off (or the timeout)."""
    timeout = float(kwargs.pop("timeout", BOOT_TIMEOUT_S))  # type: ignore[arg-type]
    guest = start(kit, nics, **kwargs)  # type: ignore[arg-type]
    return guest.wait(timeout)


def available() -> str | None:
    """Why the real-VM tests cannot run here, or None."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (Debian 12: qemu-system-x86; `make deps` installs it)"
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        return "apt-get and dpkg-deb are needed to fetch the guest kernel and busybox"
    return None
