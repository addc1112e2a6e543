#!/usr/bin/env python
"""Pre-train toy-clip, the small CLIP of the toy world, and write its checkpoint.

    python tools/pretrain_toy_clip.py --out toy/assets/toy_clip.pt --readme   # re-create the shipped weights
    python tools/pretrain_toy_clip.py --show                                 # the shipped checkpoint's record

reproduces the shipped weights (same seed, thread count, library versions and CPU give the same bits). It draws its
own images (no download), prints a progress bar, and ends with the zero-shot accuracy of the result on held-out
(unfaded) drawings of the Toy dataset's base and new classes. ``--readme`` writes that record (from the
checkpoint's ``meta``) into the toy-pretrain block of toy/README.md. See toy/README.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from toy.backbone import CHECKPOINT, read_checkpoint, save_checkpoint  # noqa: E402
from toy import world  # noqa: E402
from toy.pretrain import PretrainConfig, pretrain  # noqa: E402

BEGIN, END = "<!-- toy-pretrain:begin -->", "<!-- toy-pretrain:end -->"


def record_table(ckpt: dict, path: str | os.PathLike) -> str:
    """The checkpoint's pre-training record (its ``meta``) as a markdown table."""
    from tabulate import tabulate

    meta, cfg = ckpt["meta"], ckpt["meta"]["config"]
    acc = meta["zero_shot_accuracy"]
    row = [cfg["steps"], cfg["batch_size"], cfg["threads"], meta["torch"],
           f"{meta['train_seconds']:,.0f} s ({meta['train_seconds'] / 60:.1f} min)",
           f"{acc['base']:.1f} / {acc['new']:.1f} / {acc['all']:.1f}",
           f"{ckpt['state_dict']['logit_scale'].float().exp().item():.1f}",
           f"{os.path.getsize(path) / 2 ** 20:.1f} MiB, {len(ckpt['token_ids'])} token rows"]
    head = ["steps", "batch", "threads", "torch", "pre-training (wall clock)",
            "held-out zero-shot % base / new / all 48", "logit scale", "file"]
    shown = Path(path).resolve()
    shown = shown.relative_to(REPO) if shown.is_relative_to(REPO) else shown
    return (tabulate([row], head, tablefmt="github") +
            f"\n\nFrom the `meta` of `{shown.as_posix()}`; zero-shot with 'a photo of a {{}}.' on "
            f"{cfg['eval_per_class']} held-out unfaded drawings per class (the Toy dataset's faded images score lower, "
            "see the table above).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(CHECKPOINT), help="checkpoint file to write (default: %(default)s)")
    defaults = PretrainConfig()
    for f in fields(PretrainConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(defaults, f.name)),
                            default=getattr(defaults, f.name), help=f"(default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--show", action="store_true", help="do not train: print the record of the --out checkpoint")
    parser.add_argument("--readme", nargs="?", const=str(REPO / "toy" / "README.md"), default=None,
                        help="write the record into this file's toy-pretrain block (default file: toy/README.md)")
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "threads", "per_class", "eval_per_class"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.batch_size > len(world.WORLD):
        parser.error(f"--batch-size must be at most {len(world.WORLD)}: a batch holds distinct world classes")
    if args.show:
        ckpt = read_checkpoint(args.out)
    else:
        cfg = PretrainConfig(**{f.name: getattr(args, f.name) for f in fields(PretrainConfig)})
        _, ckpt = pretrain(cfg, progress=not args.quiet)
        save_checkpoint(ckpt, args.out)
        print(f"wrote {args.out}")
        if Path(args.out).resolve() == CHECKPOINT.resolve():
            print("note: this is the --backbone toy-clip checkpoint now. Finished toy-clip runs stay on disk and sweeps "
                  "skip them, so move old runs away before rerunning; tools/parse_results.py notes tables that mix "
                  "runs of different weights (run.backbone_weights). Feature caches are keyed by the weights.")
    text = record_table(ckpt, args.out)
    print(text)
    if args.readme:
        from experiments.readme_blocks import BlockError, replace_block

        try:
            replace_block(Path(args.readme), BEGIN, END, text)
        except BlockError as e:
            raise SystemExit(str(e)) from None
        print(f"wrote the record into {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
