"""Make the benchmark suite's modules importable the way run.py imports them."""

import sys
from pathlib import Path

BENCH_DIRECTORY = Path(__file__).resolve().parent.parent
if str(BENCH_DIRECTORY) not in sys.path:
    sys.path.insert(0, str(BENCH_DIRECTORY))
