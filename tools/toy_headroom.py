#!/usr/bin/env python
"""How much can prompt tuning gain on the toy world? Zero-shot toy-clip vs a 16-shot linear probe on its frozen
image features, on the Toy classes drawn unfaded (the pre-training distribution) and faded (the Toy dataset); and
which attributes (colour, shape, pattern) toy-clip tells apart.

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

from toy import world  # noqa: E402

BEGIN, END = "<!-- toy-headroom:begin -->", "<!-- toy-headroom:end -->"


def attribute_table(results: dict[float, dict], per_class: int) -> str:
    sats = list(results)
    rows = [[attr, len(values)] + [f"{results[s][attr]:.1f}" for s in sats]
            for attr, values in (("colour", world.COLOURS), ("shape", world.SHAPES), ("pattern", world.PATTERNS))]
    head = ["attribute", "choices"] + [f"zero-shot, saturation {s:g}" for s in sats]
    return (tabulate(rows, head, tablefmt="github", disable_numparse=True) +
            f"\n\nTop-1 % over {per_class} drawings of each of the {len(world.WORLD)} world classes, each classified "
            "among the classes that differ from it in that attribute only.")


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
    from toy.headroom import attribute_accuracy, headroom

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--saturation", type=float, nargs="+", default=[1.0, data.SATURATION],
                    help="colour saturations to compare (default: unfaded and the Toy dataset's)")
    ap.add_argument("--shots", type=int, default=16)
    ap.add_argument("--test-per-class", type=int, default=data.COUNTS["test"])
    ap.add_argument("--attribute-images", type=int, default=5, help="drawings per world class for the attribute "
                    "table (0: skip it)")
    ap.add_argument("--backbone", default="toy-clip", help="a clip.load name or weights file")
    ap.add_argument("--readme", nargs="?", const=str(REPO / "toy" / "README.md"), default=None,
                    help="write the table into this file's toy-headroom block (default file: toy/README.md)")
    args = ap.parse_args(argv)
    if not 1 <= args.shots <= data.COUNTS["train"] or not 1 <= args.test_per_class <= data.COUNTS["test"]:
        ap.error(f"--shots must be 1..{data.COUNTS['train']} and --test-per-class 1..{data.COUNTS['test']} "
                 "(the Toy dataset's images per class)")
    model = clip.load(args.backbone)
    results = {s: headroom(model, s, args.shots, args.test_per_class) for s in args.saturation}
    text = table(results, args.shots, args.test_per_class)
    if args.attribute_images:
        attrs = {s: attribute_accuracy(model, s, args.attribute_images) for s in args.saturation}
        text += "\n\n" + attribute_table(attrs, args.attribute_images)
    print(text)
    if args.readme:
        from experiments.readme_blocks import BlockError, replace_block

        try:
            replace_block(Path(args.readme), BEGIN, END, text)
        except BlockError as e:
            raise SystemExit(str(e)) from None
        print(f"wrote the table into {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
