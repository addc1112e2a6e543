#!/usr/bin/env python
"""The prepared GPU check: CUDA-marked tests, toy CoOp in fp16 against fp32 (with and without --calib), and the
real-shape steps with CUDA timings and max_memory_allocated, as one table (experiments/benchmark/device_check.py).

    python tools/device_check.py                      # on one GPU, under 8 minutes
    python tools/device_check.py --device cpu --quick # the same code on tiny shapes, no GPU (what the tests run)
    scripts/device_check.sh                           # the same, with a time limit and the table saved
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.benchmark import device_check  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tools/device_check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="tiny shapes, one toy epoch (the CPU smoke test)")
    p.add_argument("--epochs", type=int, default=5, help="toy CoOp epochs per run (default 5)")
    p.add_argument("--no-tests", action="store_true", help="skip the CUDA-marked tests")
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    rows, info = device_check.run(args.device, quick=args.quick, epochs=args.epochs, tests=not args.no_tests,
                                  log=lambda m: print(f"[device check] {m}", file=sys.stderr, flush=True))
    print(f"Device check on {info['device']} (torch {info['torch']}), {info['seconds']:.0f} s")
    print(device_check.table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "info": info}, indent=2, default=str))
    return 0 if all(r.get("ok") is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
