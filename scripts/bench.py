#!/usr/bin/env python
"""fxexport benchmarks: ``python scripts/bench.py <suite> [...] [--json FILE]``.

Every figure is a ratio against an anchor measured in the same process (torchvision,
eager torch, plain torch.onnx.export), taken as the median of interleaved blocks with
short gaps between them (onnxruntime spins a core after each run and would slow a
torch call that follows it). Each suite lives in ``scripts/bench_<suite>.py`` and
exposes ``run(args) -> list[dict]``; the rows are printed as a table and written as JSON.

Example:
    python scripts/bench.py trace --json bench-trace.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

#: each is scripts/bench_<suite>.py; a suite whose file is missing is not offered
SUITES = tuple(s for s in ("trace", "export", "verify", "edge", "openvino", "litert", "cpp_openvino", "localize",
                           "explorer") if (Path(__file__).resolve().parent / f"bench_{s}.py").exists())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suites", nargs="+", choices=SUITES, help="which benchmarks to run")
    parser.add_argument("--json", default=None, help="write all rows to this JSON file (default bench-<suites>.json)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and models (a smoke run)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_common import print_table

    results: dict[str, list[dict]] = {}
    for suite in args.suites:
        module = importlib.import_module(f"bench_{suite}")
        rows = module.run(args)
        results[suite] = rows
        print_table(f"bench {suite}", rows)
    out = Path(args.json or f"bench-{'-'.join(args.suites)}.json")
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
