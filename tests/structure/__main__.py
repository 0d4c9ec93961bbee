"""``python -m tests.structure [--json] [--all] [--src DIR]``: the structural report (issue #17)."""

import sys

from tests.structure.analyse import main

sys.exit(main())
