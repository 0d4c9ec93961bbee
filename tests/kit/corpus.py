"""Fetch and cache libvirt 9.0.0's source test corpus (never committed to this repository).

The corpus is the conformance target: tests/networkxml2xml*, networkxml2confdata,
networkxml2xmlupdate*, docs/formatnetwork.rst and the network schema (src/conf/schemas). It is
fetched with ``apt-get source`` (Debian 12 ships libvirt 9.0.0) and only the parts we test
against are unpacked into the cache. The cache records which parts it holds: when this list
grows, the next fetch unpacks it again.

The host's apt configuration is never edited: the fetch uses a private one under the cache
directory (source entries derived from the host's own binary entries, its own package lists
and cache), passed to apt-get with ``-o``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

LIBVIRT_VERSION = "9.0.0"
WANTED_PREFIXES = (
    "tests/networkxml2xmlin/",
    "tests/networkxml2xmlout/",
    "tests/networkxml2confdata/",
    "tests/networkxml2xmlupdatein/",
    "tests/networkxml2xmlupdateout/",
    "tests/networkxml2firewalldata/",
    "tests/virnetworkportxml2xmldata/",
    "tests/networkxml2xmltest.c",
    "tests/networkxml2conftest.c",
    "tests/networkxml2xmlupdatetest.c",
    "tests/networkxml2firewalltest.c",
    "docs/formatnetwork.rst",
    "src/conf/schemas/network.rng",
    "src/conf/schemas/networkcommon.rng",
    "src/conf/schemas/basictypes.rng",
)
COMPLETE_MARKER = ".complete"  # the version, then the unpacked prefixes, one per line


def cache_dir() -> Path:
    env = os.environ.get("VIRTNET_LIBVIRT_SRC_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "virtnet" / "libvirt-src"
    return base / f"libvirt-{LIBVIRT_VERSION}"


def corpus_root(fetch: bool = False) -> Path | None:
    """The cached corpus root (containing tests/ and docs/), fetching it if asked."""
    root = cache_dir()
    if _holds_everything(root):
        return root
    if not fetch:
        return None
    _fetch_into(root)
    return root


def _holds_everything(root: Path) -> bool:
    try:
        recorded = (root / COMPLETE_MARKER).read_text().splitlines()
    except OSError:
        return False
    return bool(recorded) and recorded[0] == LIBVIRT_VERSION \
        and set(WANTED_PREFIXES) <= set(recorded[1:])


APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCE_PARTS = Path("/etc/apt/sources.list.d")


def source_entries(sources: Path = APT_SOURCES, parts: Path = APT_SOURCE_PARTS) -> str:
    """deb-src entries (deb822) for every binary entry of the host's apt sources."""
    stanzas: list[str] = []
    for path in sorted(parts.glob("*.sources")) if parts.is_dir() else []:
        for stanza in path.read_text().split("\n\n"):
            fields = [line for line in stanza.splitlines() if line and not line.startswith("#")]
            types = next((line.split(":", 1)[1].split() for line in fields
                          if line.lower().startswith("types:")), [])
            if "deb" in types:
                stanzas.append("\n".join("Types: deb-src" if line.lower().startswith("types:")
                                         else line for line in fields))
    one_line = [sources] + (sorted(parts.glob("*.list")) if parts.is_dir() else [])
    for path in one_line:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split("#", 1)[0].split()
            if len(words) < 3 or words[0] != "deb":
                continue
            options = []
            if words[1].startswith("["):  # deb [signed-by=... arch=...] URI suite components
                while words[1:] and not words[1].endswith("]"):
                    options.append(words.pop(1))
                options.append(words.pop(1))
            uri, suite, *components = words[1:]
            stanza = ["Types: deb-src", f"URIs: {uri}", f"Suites: {suite}",
                      f"Components: {' '.join(components)}"]
            for option in " ".join(options).strip("[] ").split():
                key, _, value = option.partition("=")
                if key == "signed-by":
                    stanza.append(f"Signed-By: {value}")
            stanzas.append("\n".join(stanza))
    return "\n\n".join(stanzas) + "\n" if stanzas else ""


def private_apt_options(base: Path) -> list[str]:
    """apt-get options for a configuration of our own under ``base`` (sources, lists, cache):
    nothing of the host's apt state is read for sources or written."""
    for sub in ("sources.list.d", "lists/partial", "cache/archives/partial"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    entries = source_entries()
    if not entries:
        raise RuntimeError(f"no binary apt source in {APT_SOURCES} or {APT_SOURCE_PARTS} to derive "
                           "a source entry from")
    (base / "sources.list.d" / "virtnet-corpus.sources").write_text(entries)
    (base / "sources.list").write_text("")
    return [
        "-o", f"Dir::Etc::SourceList={base / 'sources.list'}",
        "-o", f"Dir::Etc::SourceParts={base / 'sources.list.d'}",
        "-o", f"Dir::State::Lists={base / 'lists'}",
        "-o", f"Dir::Cache={base / 'cache'}",
        "-o", "APT::Sandbox::User=root",  # the cache is under root's home, closed to _apt
    ]


def _apt(options: list[str], args: list[str], cwd: str) -> None:
    proc = subprocess.run(["apt-get", "-q", *options, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"apt-get {' '.join(args)} failed:\n{proc.stderr.strip()}")


def _fetch_into(root: Path) -> None:
    if shutil.which("apt-get") is None:
        raise RuntimeError("apt-get not found: cannot fetch libvirt's source corpus")
    options = private_apt_options(root.parent / "apt")
    with tempfile.TemporaryDirectory(prefix="virtnet-libvirt-src-") as tmp:
        _apt(options, ["update"], tmp)
        _apt(options, ["source", "--download-only", "libvirt"], tmp)
        tarballs = sorted(Path(tmp).glob(f"libvirt_{LIBVIRT_VERSION}.orig.tar.*"))
        if not tarballs:
            raise RuntimeError(f"apt-get source libvirt gave no libvirt_{LIBVIRT_VERSION}.orig "
                               f"tarball in {tmp}")
        staging = root.with_name(root.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        top = f"libvirt-{LIBVIRT_VERSION}/"
        with tarfile.open(tarballs[0]) as tar:
            members = []
            for member in tar.getmembers():
                if not member.name.startswith(top):
                    continue
                rel = member.name[len(top):]
                if (member.isfile() or member.isdir() or member.issym()) and rel.startswith(
                    WANTED_PREFIXES
                ):
                    member.name = rel
                    members.append(member)
            tar.extractall(staging, members=members, filter="data")
        (staging / COMPLETE_MARKER).write_text("\n".join((LIBVIRT_VERSION,
                                                         *WANTED_PREFIXES)) + "\n")
        # An older cache is swapped out, not deleted first: tests reading it meanwhile
        # see the old tree or the new one, never a missing one.
        old = root.with_name(root.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if root.exists():
            root.rename(old)
        staging.rename(root)
        shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fetch", action="store_true", help="fetch the corpus if not cached")
    args = parser.parse_args(argv)
    try:
        root = corpus_root(fetch=args.fetch)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"corpus: {exc}", file=sys.stderr)
        return 1
    if root is None:
        print("corpus: not cached (use --fetch)", file=sys.stderr)
        return 1
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
