"""Build virtnet's private Python environment for the Debian package (debian/rules calls it).

    python3.11 scripts/build-venv.py --dest debian/virtnet/usr/lib/virtnet --prefix /usr/lib/virtnet

The environment is made at DEST but will live at PREFIX: a venv of Debian 12's own
/usr/bin/python3.11 (its bin/python3 is a link to it, so Debian's security updates of the
interpreter apply), holding virtnet and its run-time dependencies from PyPI (pyproject.toml's
list, less pyroute2, which only tests use). Then it is made to work from PREFIX and to write
nothing at run time: shebangs and pyvenv.cfg name PREFIX, pip, setuptools and the activate
scripts go (nothing installs into it after the build), and every module is compiled with
unchecked-hash pycs (dpkg-deb clamps file times, which would make timestamp pycs stale and
have Python rewrite them under /usr/lib on first use).

``--compile-only`` only (re)does that last step, after other build steps imported modules.
"""

from __future__ import annotations

import argparse
import compileall
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INTERPRETER = "/usr/bin/python3.11"  # Debian 12's python3; the environment is bound to its ABI
TEST_ONLY = {"pyroute2", "pytest", "hypothesis"}  # never shipped, even if declared there
REMOVED_FROM_ENV = ["pip", "setuptools"]  # build tools; setuptools' .pth costs start-up time


def pip_environment() -> dict[str, str]:
    """The environment pip runs in: PyPI's index and nothing of this machine's pip set-up
    (pip.conf, PIP_FIND_LINKS and the like would make the package depend on the build host)."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("PIP_") or key in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL="https://pypi.org/simple",
               PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def run(*command: str | Path) -> None:
    print("+", " ".join(map(str, command)), flush=True)
    subprocess.run([str(part) for part in command], check=True, env=pip_environment())


def runtime_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    keep = []
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!~ \[;]", requirement, maxsplit=1)[0].lower()
        if name not in TEST_ONLY:
            keep.append(requirement)
    return keep


def build(dest: Path, prefix: str, freeze: Path | None, wheel_dir: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    run(INTERPRETER, "-m", "venv", dest)
    pip = [dest / "bin" / "python3", "-m", "pip", "-q"]
    # The project's own wheel: pip builds it in an isolated environment with the setuptools
    # pyproject.toml asks for (Debian 12's 66 cannot read `license = "MIT"`).
    if wheel_dir.exists():
        shutil.rmtree(wheel_dir)
    run(*pip, "wheel", "--no-deps", "-w", wheel_dir, ROOT)
    wheels = sorted(wheel_dir.glob("virtnet-*.whl"))
    run(*pip, "install", "--no-compile", "--only-binary", ":all:", *runtime_requirements())
    run(*pip, "install", "--no-compile", "--no-deps", *wheels)
    if freeze is not None:
        freeze.parent.mkdir(parents=True, exist_ok=True)
        listing = subprocess.run([*map(str, pip[:-1]), "freeze", "--all",
                                  "--exclude", "pip", "--exclude", "setuptools"],
                                 check=True, capture_output=True, text=True,
                                 env=pip_environment()).stdout
        listing = re.sub(r"^virtnet @ .*$", f"virtnet=={version()}", listing, flags=re.M)
        freeze.write_text("# The Python packages in /usr/lib/virtnet (from PyPI at build time)\n"
                          + listing)
    run(*pip, "uninstall", "-y", *REMOVED_FROM_ENV)
    relocate(dest, prefix)
    compile_all(dest, prefix)


def version() -> str:
    text = (ROOT / "src" / "virtnet" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    assert match, "virtnet.__version__ not found"
    return match.group(1)


def relocate(dest: Path, prefix: str) -> None:
    """Make DEST work from PREFIX: no path of the build machine stays in the environment."""
    bindir = dest / "bin"
    for entry in list(bindir.iterdir()):
        # only the interpreter and our two commands: the activate scripts name the build
        # directory, and the dependencies' own commands (pygmentize, ...) are not ours to ship
        if not entry.name.startswith(("python", "virtnet")):
            entry.unlink()
    build_python = f"#!{dest.resolve()}/bin/python"
    for entry in bindir.iterdir():
        if entry.is_symlink() or not entry.is_file():
            continue
        data = entry.read_bytes()
        if data.startswith(b"#!"):
            first, _, rest = data.partition(b"\n")
            if first.decode().startswith(build_python):
                entry.write_bytes(f"#!{prefix}/bin/python3".encode() + b"\n" + rest)
    cfg = dest / "pyvenv.cfg"
    lines = [line for line in cfg.read_text().splitlines() if not line.startswith("command")]
    lines.append(f"command = {INTERPRETER} -m venv {prefix}")
    cfg.write_text("\n".join(lines) + "\n")
    # pip records where a local wheel came from: the build directory
    for record in dest.glob("lib/python3*/site-packages/*.dist-info/direct_url.json"):
        record.unlink()
    leaks = []
    needle = str(dest.resolve()).encode()
    for path in dest.rglob("*"):
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
            leaks.append(path)
    if leaks:
        raise SystemExit(f"build paths left in: {', '.join(map(str, leaks[:10]))}")


def compile_all(dest: Path, prefix: str) -> None:
    for cache in list(dest.rglob("__pycache__")):
        shutil.rmtree(cache)
    site = next(dest.glob("lib/python3*/site-packages"))
    ok = compileall.compile_dir(
        site, quiet=1, stripdir=str(dest), prependdir=prefix, workers=1,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    if not ok:
        raise SystemExit("some modules do not compile")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--freeze", type=Path, default=None,
                        help="write the bundled packages and their versions here")
    parser.add_argument("--wheel-dir", type=Path, default=ROOT / "debian" / "generated" / "wheel")
    parser.add_argument("--compile-only", action="store_true")
    args = parser.parse_args()
    if args.compile_only:
        compile_all(args.dest, args.prefix)
    else:
        build(args.dest, args.prefix, args.freeze, args.wheel_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
