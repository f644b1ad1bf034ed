"""How long `dfkd --help` takes, warm (target: under 0.3 s on 2 CPU cores).

Usage: python benchmarks/cli_startup.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    dfkd = shutil.which("dfkd") or str(Path(sys.executable).with_name("dfkd"))
    timings = {}
    for command in (["--help"], ["list-methods"], ["plugins", "--json"]):
        subprocess.run([dfkd, *command], capture_output=True, check=True)  # warm the caches
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run([dfkd, *command], capture_output=True, check=True)
            runs.append(time.perf_counter() - start)
        timings[" ".join(command)] = statistics.median(runs)
    for command, seconds in timings.items():
        print(f"dfkd {command:<16} median {seconds:.3f} s over {args.repeats} runs")


if __name__ == "__main__":
    main()
