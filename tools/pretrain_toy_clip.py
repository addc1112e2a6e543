#!/usr/bin/env python
"""Pre-train toy-clip, the small CLIP of the toy world, and write its checkpoint.

    python tools/pretrain_toy_clip.py --out toy/assets/toy_clip.pt

reproduces the shipped weights (same seed, thread count and library versions give the same bits). It draws its
own images (no download), prints a progress bar, and ends with the zero-shot accuracy of the result on held-out
(unfaded) drawings of the Toy dataset's base and new classes. See toy/README.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from toy.backbone import CHECKPOINT, save_checkpoint  # noqa: E402
from toy.pretrain import PretrainConfig, pretrain  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(CHECKPOINT), help="checkpoint file to write (default: %(default)s)")
    defaults = PretrainConfig()
    for f in fields(PretrainConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(defaults, f.name)),
                            default=getattr(defaults, f.name), help=f"(default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    cfg = PretrainConfig(**{f.name: getattr(args, f.name) for f in fields(PretrainConfig)})
    _, ckpt = pretrain(cfg, progress=not args.quiet)
    save_checkpoint(ckpt, args.out)
    meta = ckpt["meta"]
    acc = meta["zero_shot_accuracy"]
    print(f"zero-shot accuracy ('a photo of a {{}}.', {cfg.eval_per_class} held-out unfaded drawings per class; "
          f"the Toy dataset's faded ones score lower, see tools/toy_headroom.py): "
          f"base {acc['base']:.1f}%  new {acc['new']:.1f}%  all 48 {acc['all']:.1f}%")
    print(f"pre-training took {meta['train_seconds']:.0f} s; wrote {args.out} "
          f"({os.path.getsize(args.out) / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
