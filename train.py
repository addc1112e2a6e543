"""Train or evaluate a prompt-tuning method, with the CoOp-family command line plus ``--calib [NAME]``.

    python train.py --root DATA --seed 1 --trainer CoOp --calib \
        --dataset-config-file configs/datasets/caltech101.yaml \
        --config-file configs/trainers/CoOp/vit_b16_ep50.yaml \
        --output-dir output/... DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES base

Config merge order (engine.md §2.3): defaults <- extend_cfg <- dataset yaml <- method yaml <- CLI flags <- KEY VALUE
opts, which have the final word.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import traceback

import torch
from yacs.config import CfgNode as CN

from dassl.config import flatten_cfg, get_cfg_default
from dassl.utils import UserError, atomic_write_text, closest_match, collect_env_info, set_random_seed

KEY_RE = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def extend_cfg(cfg: CN) -> None:
    """Add every node our trainers, datasets and calibration read (all nodes exist in every run)."""
    import trainers  # noqa: F401  (registers every method)
    from calibration.regularizers import add_calib_config
    from dassl.engine import TRAINER_REGISTRY

    try:
        from datasets.common import add_dataset_config
    except ImportError:  # datasets package not importable: keep the engine's keys
        add_dataset_config = None
    if add_dataset_config is not None:
        add_dataset_config(cfg)
    if "SUBSAMPLE_CLASSES" not in cfg.DATASET:
        cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    add_calib_config(cfg)
    for name in TRAINER_REGISTRY.registered_names():
        cls = TRAINER_REGISTRY.get(name)
        node, defaults = getattr(cls, "cfg_node", None), getattr(cls, "cfg_defaults", None)
        if not node or defaults is None:
            continue
        if node not in cfg.TRAINER:
            cfg.TRAINER[node] = CN()
        for key, value in defaults.items():
            if key not in cfg.TRAINER[node]:
                cfg.TRAINER[node][key] = value
    # TCPT's top-level LOSS node (ProGrad's yaml sets LOSS.NAME / LOSS.T; scripts pass LOSS.LAMBDA)
    cfg.LOSS = CN()
    cfg.LOSS.GM = False
    cfg.LOSS.NAME = ""
    cfg.LOSS.ALPHA = 0.0
    cfg.LOSS.T = 1.0
    cfg.LOSS.LAMBDA = 1.0
    cfg.MODEL.TEXT_TRUNCATE_EOT = True    # text tower over positions 0..max(EOT) only: exact, faster (speed key)
    cfg.MODEL.TEXT_CHECKPOINT_CHUNK = 0   # > 0: activation checkpointing of the text tower over chunks of this
    #                                       many prompts in training (exact; less memory, ~1/3 more text time)
    cfg.TEST.TEXT_CHUNK = -1           # prompts per text-encoder call at evaluation (bounded memory); -1: by
    #                                    device (trainers.base.TEXT_CHUNK_DEFAULTS), 0: all at once
    cfg.TEST.FEATURE_CACHE = True      # cache frozen test-image features on disk (trainers/feature_cache.py)
    cfg.TEST.FEATURE_CACHE_DIR = ""    # default: $CALIB_PROMPT_CACHE/features or ~/.cache/calib-prompt/features
    cfg.CONFIG_NAME = ""


def reset_cfg(cfg: CN, args) -> None:
    """Direct assignment of the CLI flags (Dassl's reset_cfg), with ``--seed 0`` honoured."""
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed is not None:
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head
    if args.calib is not None:
        cfg.TRAINER.CALIB.NAME = args.calib


_YACS_UNKNOWN = re.compile(r"Non-existent (?:config )?key: (\S+)")
_YACS_TYPE = re.compile(r"Type mismatch \(<class '([\w.]+)'> vs\. <class '([\w.]+)'>\).* for config key: (\S+)$",
                        re.DOTALL)
_TYPE_NAMES = {"float": "a float", "int": "an integer", "str": "a string", "bool": "True or False",
               "tuple": "a tuple", "list": "a list", "yacs.config.CfgNode": "a group of keys"}


def _cfg_error(exc: Exception, source: str, cfg: CN) -> UserError:
    """yacs' merge errors as one message naming the key and the expected type (or the closest existing key)."""
    msg = str(exc.args[0]) if exc.args else str(exc)
    unknown = _YACS_UNKNOWN.search(msg)
    if unknown:
        key = unknown.group(1)
        close = closest_match(key, flatten_cfg(cfg))
        hint = f'; did you mean "{close}"?' if close else ""
        return UserError(f"{source}: unknown config key {key}{hint} (keys are defined in dassl/config/defaults.py, "
                         "train.py's extend_cfg and the trainers' cfg_defaults)")
    mismatch = _YACS_TYPE.search(msg)
    if mismatch:
        expected, got, key = mismatch.groups()
        fix = " (write it with a decimal point, e.g. 1.0)" if (expected, got) == ("float", "int") else ""
        fix = fix or (" (quote it to make it a string)" if expected == "str" else "")
        current = flatten_cfg(cfg).get(key)
        like = f" like its current value {current!r}" if current is not None else ""
        return UserError(f"{source}: {key} must be {_TYPE_NAMES.get(expected, expected)}{like}, got "
                         f"{_TYPE_NAMES.get(got, got)}{fix}")
    return UserError(f"{source}: {msg}")


def _merge_file(cfg: CN, path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise UserError(f"{what} {path!r} does not exist; pass a file from configs/ (e.g. "
                        f"configs/{'datasets' if 'dataset' in what else 'trainers/CoOp'}/...)")
    import yaml

    try:
        cfg.merge_from_file(path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise UserError(f"{path}{where} is not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    except (KeyError, ValueError, AssertionError) as exc:
        raise _cfg_error(exc, path, cfg) from None
    except (AttributeError, TypeError):  # the top level is a list or a scalar, not a mapping
        raise UserError(f"{path} must be a YAML mapping of config keys (e.g. 'OPTIM:' then '  LR: 0.002')") from None


def setup_cfg(args) -> CN:
    for path in getattr(args, "trainer_file", None) or []:  # before extend_cfg reads the trainers' cfg_defaults
        from trainers.plugins import import_file

        import_file(path)
    cfg = get_cfg_default()
    extend_cfg(cfg)
    if args.dataset_config_file:
        _merge_file(cfg, args.dataset_config_file, "dataset config file")
    if args.config_file:
        _merge_file(cfg, args.config_file, "config file")
        cfg.CONFIG_NAME = os.path.splitext(os.path.basename(args.config_file))[0]
    reset_cfg(cfg, args)
    if len(args.opts) % 2:
        raise UserError("the options after the flags must be KEY VALUE pairs, but an odd number was given (a key "
                        f"without its value?): {' '.join(map(str, args.opts))}")
    known = flatten_cfg(cfg)
    for key in args.opts[0::2]:  # before yacs, which fails on some bad keys with a bare TypeError
        if key not in known:
            raise _cfg_error(KeyError(f"Non-existent key: {key}"), "command-line option", cfg)
    try:
        cfg.merge_from_list(args.opts)
    except (KeyError, AssertionError, ValueError, TypeError) as exc:
        raise _cfg_error(exc, "command-line option", cfg) from None
    from calibration.regularizers import resolve_calib_name

    cfg.TRAINER.CALIB.NAME = resolve_calib_name(cfg.TRAINER.CALIB.NAME)
    cfg.freeze()
    return cfg


def print_args(args, cfg) -> None:
    print("***************")
    print("** Arguments **")
    print("***************")
    for key in sorted(vars(args)):
        print(f"{key}: {getattr(args, key)}")
    print("************")
    print("** Config **")
    print("************")
    print(cfg)


def main(args) -> None:
    cfg = setup_cfg(args)
    from dassl.engine import check_max_epoch
    from dassl.engine.build import trainer_class

    if not (args.eval_only or args.no_train) and getattr(trainer_class(cfg.TRAINER.NAME), "trainable", True):
        check_max_epoch(cfg.OPTIM.MAX_EPOCH)  # before anything is written
    if cfg.TRAIN.NUM_THREADS < 0:
        raise UserError(f"TRAIN.NUM_THREADS {cfg.TRAIN.NUM_THREADS}: expected 0 (torch's default, one per core) "
                        "or a positive thread count, e.g. TRAIN.NUM_THREADS 1")
    if cfg.TRAIN.NUM_THREADS > 0:
        torch.set_num_threads(cfg.TRAIN.NUM_THREADS)
    if args.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True

    try:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output directory {cfg.OUTPUT_DIR!r} (--output-dir): "
                        f"{exc.strerror or exc}") from None
    from dassl.utils import run_lock

    lock = run_lock.acquire(cfg.OUTPUT_DIR)  # one writer per folder (dassl/utils/run_lock.py)
    try:
        _run(args, cfg)
    finally:
        if lock is not None:
            lock.release()


def _run(args, cfg) -> None:
    from trainers import identity, run_folder
    from trainers.eval_only import adopt_training_config

    # Validate everything before the folder is touched (trainers/run_folder.py); the output so far is held in
    # memory and goes into log.txt once the run starts.
    held = run_folder.hold_console()
    if args.eval_only:
        cfg.defrost()
        adopt_training_config(cfg, args)  # the checkpoint's training keys (trainers/eval_only.py)
        cfg.freeze()
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    print_args(args, cfg)
    print("Collecting env info ...")
    print("** System info **")
    print(collect_env_info())
    print(f"torch threads: {torch.get_num_threads()} (TRAIN.NUM_THREADS {cfg.TRAIN.NUM_THREADS})")
    print()

    from dassl.engine import build_trainer

    trainer = build_trainer(cfg)
    stale_checkpoints = []
    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
    trainer.identity = identity.identity(cfg, getattr(trainer.dm.dataset, "split_sha256", None),
                                         getattr(trainer, "_loaded_identity", None), args.opts)
    if not args.eval_only and not args.no_train and hasattr(trainer, "resume_plan"):
        stale_checkpoints = trainer.resume_plan()
    run_folder.start(cfg.OUTPUT_DIR, held, stale_checkpoints)  # the previous record moves aside only now
    if stale_checkpoints:
        print("Note: the checkpoints here were made by other code, libraries or data; training from scratch")
    atomic_write_text(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), cfg.dump())
    if args.eval_only:
        trainer.test()
        return
    if not args.no_train:
        trainer.train()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=str, default="", help="path to dataset")
    parser.add_argument("--output-dir", type=str, default="", help="output directory")
    parser.add_argument("--resume", type=str, default="", help="checkpoint directory (from which the training resumes)")
    parser.add_argument("--seed", type=int, default=None, help="only non-negative values enable a fixed seed")
    parser.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    parser.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    parser.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    parser.add_argument("--config-file", type=str, default="", help="path to config file")
    parser.add_argument("--dataset-config-file", type=str, default="", help="path to config file for dataset setup")
    parser.add_argument("--trainer", type=str, default="", help="name of trainer")
    parser.add_argument("--trainer-file", type=str, action="append", default=[], metavar="PATH",
                        help="a Python file that registers a trainer (repeatable); see trainers/contrib/README.md")
    parser.add_argument("--backbone", type=str, default="", help="name of CNN backbone")
    parser.add_argument("--head", type=str, default="", help="name of head")
    parser.add_argument("--eval-only", action="store_true", help="evaluation only")
    parser.add_argument("--model-dir", type=str, default="", help="load model from this directory for eval-only mode")
    parser.add_argument("--load-epoch", type=int, help="load model weights at this epoch for evaluation")
    parser.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    parser.add_argument("--calib", nargs="?", const="tcpt", default=None, metavar="NAME",
                        help="calibration objective: bare --calib = the paper's method (tcpt); "
                             "or mbls | zs_norm | penalty")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic algorithms (identical results for identical commands)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="modify config options using the command-line")
    return parser


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    # ``--calib DATASET.NUM_SHOTS 4``: the bare flag followed by opts; give the key back to the opts
    if args.calib is not None and KEY_RE.match(args.calib):
        args.opts = [args.calib] + list(args.opts or [])
        args.calib = "tcpt"
    args.opts = list(args.opts or [])
    return args


def cli(argv=None) -> int:
    args = parse_args(argv)
    try:
        main(args)
    except UserError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(cli())
