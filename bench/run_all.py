"""Run every benchmark in bench/ in turn (`make bench`); each prints its own side-by-side table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = ["bench_model.py", "bench_start.py", "bench_ports.py", "bench_daemon.py"]


def main() -> int:
    here = Path(__file__).resolve().parent
    status = 0
    for name in BENCHES:
        print(f"\n===== {name} =====", flush=True)
        result = subprocess.run([sys.executable, str(here / name)], check=False)
        if result.returncode != 0:
            print(f"{name} exited with status {result.returncode}", flush=True)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
