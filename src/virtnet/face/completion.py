"""Shell completion of network names (bash, zsh: click's scripts, see scripts/gen-completion.py).

Loaded only when the shell asks for a completion, through virtnet.face.cli.complete_network. The
names are read from the state directory (--state-dir, or the default one) directly, without
the lock or the daemon: a TAB must be instant and never fail; a directory the user may not
read (/etc/virtnet/networks is root's) offers no names. An argument that also takes a FILE
(its metavar says so) gets the shell's file completion too.
"""

from __future__ import annotations

from pathlib import Path

import click
from click.shell_completion import CompletionItem

from virtnet.paths import StatePaths


def network_names(state_dir: Path | None) -> set[str]:
    """The defined and the active (transient ones included) networks of a state directory."""
    paths = StatePaths.from_option(state_dir)
    names: set[str] = set()
    for directory, suffix in ((paths.networks_dir, ".xml"), (paths.status_dir, ".json")):
        try:
            names.update(entry.name[: -len(suffix)] for entry in directory.iterdir()
                         if entry.name.endswith(suffix) and len(entry.name) > len(suffix))
        except OSError:
            continue
    return names


def complete_network(ctx: click.Context, param: click.Parameter,
                     incomplete: str) -> list[CompletionItem]:
    names = network_names(ctx.find_root().params.get("state_dir"))
    items = [CompletionItem(name) for name in sorted(names) if name.startswith(incomplete)]
    if "FILE" in (param.metavar or ""):
        # first: click's bash script empties the replies when it meets a file item
        items.insert(0, CompletionItem(incomplete, type="file"))
    return items
