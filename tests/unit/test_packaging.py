"""What the Debian package generates from the code (issue #18): man pages, completion, --version.

The package itself is checked by ``make deb-check`` (a clean Debian 12 chroot); these are the
fast parts: the generators see every verb and option, and network names complete.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

from virtnet import __version__
from virtnet.face.cli import main as cli
from virtnet.face.completion import complete_network

ROOT = Path(__file__).resolve().parents[2]


def run_script(name: str, out: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / name), "--out", str(out)],
                   check=True)


def test_man_pages_name_every_verb_and_daemon_option(tmp_path: Path) -> None:
    from virtnet.daemon.__main__ import parse_args

    run_script("gen-manpages.py", tmp_path)
    page = (tmp_path / "virtnet.1").read_text()
    for verb in cli.commands:
        assert f".SS {verb.replace('-', chr(92) + '-')}\n" in page, verb
    daemon_page = (tmp_path / "virtnetd.8").read_text()
    options = [*vars(parse_args([])), "version"]
    for option in options:
        assert "\\-\\-" + option.replace("_", "\\-") in daemon_page, option
    assert f'"virtnet {__version__}"' in page.splitlines()[1]


def test_completion_scripts_call_back_into_virtnet(tmp_path: Path) -> None:
    run_script("gen-completion.py", tmp_path)
    assert "_VIRTNET_COMPLETE=bash_complete" in (tmp_path / "virtnet").read_text()
    assert (tmp_path / "_virtnet").read_text().startswith("#compdef virtnet\n")


def completions(args: list[str], incomplete: str) -> list[tuple[str, str]]:
    from click.shell_completion import ShellComplete

    items = ShellComplete(cli, {}, "virtnet", "_VIRTNET_COMPLETE").get_completions(args,
                                                                                   incomplete)
    return [(item.type, item.value) for item in items]


def test_network_names_complete_from_the_state_dir(tmp_path: Path) -> None:
    (tmp_path / "etc" / "networks").mkdir(parents=True)
    (tmp_path / "run" / "network").mkdir(parents=True)
    for name in ("default.xml", "dmz.xml", "notes.txt", ".xml"):
        (tmp_path / "etc" / "networks" / name).write_text("")
    (tmp_path / "run" / "network" / "transient1.json").write_text("{}")
    state = ["--state-dir", str(tmp_path)]
    assert completions([*state, "net-start"], "d") == [("plain", "default"), ("plain", "dmz")]
    assert completions([*state, "net-info"], "t") == [("plain", "transient1")]
    # NAME|FILE arguments also offer the shell's files
    assert completions([*state, "plan"], "de") == [("file", "de"), ("plain", "default")]


def test_unreadable_state_offers_no_names(tmp_path: Path) -> None:
    ctx = click.Context(cli, info_name="virtnet")
    ctx.params["state_dir"] = tmp_path / "missing"
    param = cli.commands["net-start"].params[0]
    assert complete_network(ctx, param, "") == []


def test_daemon_version() -> None:
    out = subprocess.run([sys.executable, "-m", "virtnet.daemon", "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out == f"virtnetd {__version__}\n"
