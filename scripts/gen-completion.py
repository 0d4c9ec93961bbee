"""Write virtnet's bash and zsh completion scripts from its click group.

    python scripts/gen-completion.py --out DIR     # DIR/virtnet (bash), DIR/_virtnet (zsh)

The scripts are click's own: at each TAB they run ``virtnet`` with _VIRTNET_COMPLETE set, and
the CLI answers from its definitions (verbs, options, choices) and, for network arguments,
from the state directory (virtnet.face.cli.complete_network). Nothing here can drift from the CLI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SHELLS = {"bash": "virtnet", "zsh": "_virtnet"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from click.shell_completion import get_completion_class

    from virtnet.face.cli import main as cli

    args.out.mkdir(parents=True, exist_ok=True)
    for shell, filename in SHELLS.items():
        completion = get_completion_class(shell)
        assert completion is not None, shell
        source = completion(cli, {}, "virtnet", "_VIRTNET_COMPLETE").source()
        (args.out / filename).write_text(source.rstrip("\n") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
