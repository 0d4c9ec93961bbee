"""Fetch and cache libvirt 9.0.0's source test corpus (never committed to this repository).

The corpus is the conformance target: tests/networkxml2xml*, networkxml2confdata,
networkxml2xmlupdate* and docs/formatnetwork.rst. It is fetched with ``apt-get source`` (Debian
12 ships libvirt 9.0.0) and only the parts we test against are unpacked into the cache.
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
)


def cache_dir() -> Path:
    env = os.environ.get("VIRTNET_LIBVIRT_SRC_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "virtnet" / "libvirt-src"
    return base / f"libvirt-{LIBVIRT_VERSION}"


def corpus_root(fetch: bool = False) -> Path | None:
    """The cached corpus root (containing tests/ and docs/), fetching it if asked."""
    root = cache_dir()
    if (root / ".complete").exists():
        return root
    if not fetch:
        return None
    _fetch_into(root)
    return root


def _fetch_into(root: Path) -> None:
    if shutil.which("apt-get") is None:
        raise RuntimeError("apt-get not found: cannot fetch libvirt's source corpus")
    with tempfile.TemporaryDirectory(prefix="virtnet-libvirt-src-") as tmp:
        proc = subprocess.run(
            ["apt-get", "source", "--download-only", "libvirt"],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=600,
        )
        tarballs = sorted(Path(tmp).glob(f"libvirt_{LIBVIRT_VERSION}.orig.tar.*"))
        if proc.returncode != 0 or not tarballs:
            raise RuntimeError(
                "apt-get source libvirt failed (is a deb-src entry configured? `make deps` adds "
                f"one):\n{proc.stderr.strip()}"
            )
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
        (staging / ".complete").write_text(LIBVIRT_VERSION + "\n")
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)


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
