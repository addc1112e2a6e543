#!/usr/bin/env python
"""How much can prompt tuning gain on the toy world? Zero-shot toy-clip vs a 16-shot linear probe on its frozen
image features, on the Toy classes drawn unfaded (the pre-training distribution) and faded (the Toy dataset).

    python tools/toy_headroom.py            # print the table (about a minute on 2 CPU cores)
    python tools/toy_headroom.py --readme   # also write it into toy/README.md (the toy-headroom block)

See toy/headroom.py for why the probe is the yardstick.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tabulate import tabulate  # noqa: E402

BEGIN, END = "<!-- toy-headroom:begin -->", "<!-- toy-headroom:end -->"


def table(results: dict[float, dict], shots: int, test_per_class: int) -> str:
    rows = []
    for saturation, res in results.items():
        rows.append([f"{saturation:g}"] + [f"{res[h][k]:.1f}" for h in ("base", "new") for k in ("zero_shot", "probe")])
    head = ["colour saturation", "base zero-shot", f"base {shots}-shot probe", "new zero-shot",
            f"new {shots}-shot probe"]
    return (tabulate(rows, head, tablefmt="github", disable_numparse=True) +
            f"\n\nTop-1 % on the first {test_per_class} Toy test images per class; each half a 24-way problem.")


def main(argv=None) -> int:
    import clip
    from toy import data
    from toy.headroom import headroom

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--saturation", type=float, nargs="+", default=[1.0, data.SATURATION],
                    help="colour saturations to compare (default: unfaded and the Toy dataset's)")
    ap.add_argument("--shots", type=int, default=16)
    ap.add_argument("--test-per-class", type=int, default=data.COUNTS["test"])
    ap.add_argument("--backbone", default="toy-clip", help="a clip.load name or weights file")
    ap.add_argument("--readme", nargs="?", const=str(REPO / "toy" / "README.md"), default=None,
                    help="write the table into this file's toy-headroom block (default file: toy/README.md)")
    args = ap.parse_args(argv)
    model = clip.load(args.backbone)
    results = {s: headroom(model, s, args.shots, args.test_per_class) for s in args.saturation}
    text = table(results, args.shots, args.test_per_class)
    print(text)
    if args.readme:
        from tools.update_readme import replace_block

        replace_block(Path(args.readme), BEGIN, END, text)
        print(f"wrote the table into {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
