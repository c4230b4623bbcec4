"""``python -m edgecifar.zoo BENCH.json``: record a bench report's figures in the zoo manifest."""

import json
import sys
from pathlib import Path

from edgecifar.zoo import record_bench

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m edgecifar.zoo BENCH.json")
    n = record_bench(json.loads(Path(sys.argv[1]).read_text()))
    print(f"recorded bench figures for {n} zoo file(s)")
