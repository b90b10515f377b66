#!/usr/bin/env python
"""The compatibility sweep: ``python scripts/zoo.py [--models all|timm|...] [--workers N]``.

Runs every model of the sweep (torchvision classification, segmentation, detection
backbones, a timm set) through trace -> extractor -> ONNX (auto + the other exporter) ->
TorchScript -> verify at two batch sizes, each model in its own worker process with a time
limit; results are appended to ``build/zoo/results.jsonl`` (a re-run skips finished
models) and the matrix is written to ``docs/compatibility.md`` + ``docs/compatibility.json``.
The work itself lives in the :mod:`fxexport.zoo` package; this is also ``fxexport zoo``.

Example:
    python scripts/zoo.py --models smoke --fresh --no-matrix
    python scripts/zoo.py --backend ray --workers 2 --only 'timm:'
"""

from __future__ import annotations

import argparse
import sys

from fxexport import zoo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zoo.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    zoo.add_arguments(parser)
    return zoo.main_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
