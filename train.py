r"""Train or evaluate a prompt-tuning method, with the CoOp-family command line plus ``--calib [NAME]``.

    python train.py --root DATA --seed 1 --trainer CoOp --calib \
        --dataset-config-file configs/datasets/caltech101.yaml \
        --config-file configs/trainers/CoOp/vit_b16_ep50.yaml \
        --output-dir output/... DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES base

Several training runs that differ only in their loss (plain, ``--calib``, the baselines; text-only methods with
the same data settings) train in lockstep in one process when their command lines are joined with ``--and``:
one data stream, one frozen image pass per batch, each run its own folder and record (docs/lockstep.md).

Config merge order (docs/engine_api.md#merge-order): defaults <- extend_cfg <- dataset yaml <- method yaml <- CLI flags <- the
sweep's own ``--sweep-opt KEY VALUE`` settings <- KEY VALUE opts, which have the final word.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import traceback
from typing import Sequence

import torch
from yacs.config import CfgNode as CN

import runs
from calibration.regularizers import CALIB_NAMES, DEFAULT_CALIB, resolve_calib_name
from common.atomic import atomic_write_text
from common.errors import UserError
from common.suggest import did_you_mean
from dassl.config import flatten_cfg, get_cfg_default
from dassl.utils import collect_env_info, set_random_seed

KEY_RE = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")

runs.register_with_engine()  # the engine's run-record writer and metric function are this application's


#: where each config key is declared, once (the unknown-key message names them)
CONFIG_OWNERS = ("dassl/config/defaults.py (the engine)", "datasets/common.py (DATASET_DEFAULTS)",
                 "calibration/regularizers.py (CALIB_DEFAULTS)", "trainers/config.py (LOSS, MODEL.TEXT_*, TEST)",
                 "each method's cfg_defaults (TRAINER.<node>)", "train.py (CONFIG_NAME)")


def register_project() -> None:
    """Import the dataset and trainer modules, which register themselves in the engine's registries (the engine
    imports no project module)."""
    import datasets
    import trainers  # noqa: F401  (every method file, then the drop-in files)

    if not hasattr(datasets, "DATASET_MODULES"):  # e.g. HuggingFace's `datasets` ahead of ours on sys.path
        raise UserError(f"'import datasets' found {getattr(datasets, '__file__', datasets)}, not this repository's "
                        "datasets/ package; run from the repository root")


def extend_cfg(cfg: CN) -> None:
    """Add every node our trainers, datasets and calibration read (all nodes exist in every run)."""
    register_project()
    from calibration.regularizers import add_calib_config
    from datasets.common import add_dataset_config
    from trainers.config import add_trainer_config

    add_dataset_config(cfg)
    add_calib_config(cfg)
    add_trainer_config(cfg)
    cfg.CONFIG_NAME = ""  # the --config-file's name (set by setup_cfg); the run record shows it


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
        hint = did_you_mean(key, flatten_cfg(cfg), clause=True)
        return UserError(f"{source}: unknown config key {key}{hint} (keys are declared in "
                         f"{'; '.join(CONFIG_OWNERS)})")
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
    if path.endswith(".py"):  # yacs would execute it: opening a file never runs its code
        raise UserError(f"{what} {path!r} is a Python file, which yacs would run to read it; config files are YAML "
                        "(.yaml), read without running anything")
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
    sweep_opts = list(getattr(args, "sweep_opts", None) or [])
    # the sweep's own settings (--sweep-opt) first, then the user's KEY VALUE options, which have the final word
    for source, opts in (("--sweep-opt", sweep_opts), ("command-line option", args.opts)):
        for key in opts[0::2]:  # before yacs, which fails on some bad keys with a bare TypeError
            if key not in known:
                raise _cfg_error(KeyError(f"Non-existent key: {key}"), source, cfg)
        try:
            cfg.merge_from_list(opts)
        except (KeyError, AssertionError, ValueError, TypeError) as exc:
            raise _cfg_error(exc, source, cfg) from None
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
    _setup_process(args, cfg)
    with _locked_folder(cfg):
        _run(args, cfg)


def _setup_process(args, cfg) -> None:
    """What a run sets for the whole process: epochs checked, torch threads, deterministic algorithms."""
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


@contextlib.contextmanager
def _locked_folder(cfg):
    """Create the output folder and hold its lock: one writer per folder (dassl/utils/run_lock.py). A run refused
    before it started leaves neither the lock file nor the folders it created behind."""
    from dassl.utils import run_lock

    created = _missing_dirs(cfg.OUTPUT_DIR)
    try:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output directory {cfg.OUTPUT_DIR!r} (--output-dir): "
                        f"{exc.strerror or exc}") from None
    lock_file = os.path.join(cfg.OUTPUT_DIR, run_lock.LOCK_FILE)
    new_lock = not os.path.exists(lock_file)
    try:
        lock = run_lock.acquire(cfg.OUTPUT_DIR)
    except UserError:
        _remove_empty(created)
        raise
    try:
        yield
    except BaseException:
        if new_lock and os.listdir(cfg.OUTPUT_DIR) == [run_lock.LOCK_FILE]:  # refused before it started
            os.unlink(lock_file)
            if lock is not None:
                lock.release()
                lock = None
            _remove_empty(created)
        raise
    finally:
        if lock is not None:
            lock.release()


def _missing_dirs(path: str) -> list[str]:
    """The folders ``os.makedirs(path)`` would create, deepest first."""
    out, path = [], os.path.abspath(path)
    while path and not os.path.exists(path):
        out.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return out


def _remove_empty(dirs: list[str]) -> None:
    """Remove the folders this run created when they are still empty: a refused run leaves nothing behind."""
    for d in dirs:
        try:
            os.rmdir(d)
        except OSError:
            return


def _run(args, cfg) -> None:
    trainer, held, stale = prepare_run(args, cfg)
    begin_run(cfg, trainer, held, stale)
    if args.eval_only:
        trainer.test()
        return
    if not args.no_train:
        trainer.train()


def prepare_run(args, cfg):
    """Seed, build the trainer and validate everything before the run folder is touched (runs/run_folder.py); the
    output so far is held in memory and goes into log.txt once :func:`begin_run` starts the run. Returns the trainer,
    the held console and the checkpoints that cannot be resumed."""
    from runs import identity, run_folder
    from runs.eval_only import adopt_training_config
    from trainers import plugins

    held = run_folder.hold_console()
    if args.eval_only:
        cfg.defrost()
        adopt_training_config(cfg, args)  # the checkpoint's training keys (runs/eval_only.py)
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

    with plugins.build_precision(cfg):  # clip.build_model of a ported file follows the built-ins' CPU rule
        trainer = build_trainer(cfg)
    stale_checkpoints = []
    if args.eval_only:
        plugins.load_model(trainer, args.model_dir, args.load_epoch)
    trainer.identity = identity.identity(cfg, getattr(trainer.dm.dataset, "split_sha256", None),
                                         getattr(trainer, "_loaded_identity", None), args.opts, args.sweep_opts)
    if not args.eval_only and not args.no_train and hasattr(trainer, "resume_plan"):
        stale_checkpoints = trainer.resume_plan()
    return trainer, held, stale_checkpoints


def begin_run(cfg, trainer, held, stale_checkpoints) -> None:
    """The run starts: the previous record moves aside, log.txt opens, config.yaml is written."""
    from runs import run_folder

    run_folder.start(cfg.OUTPUT_DIR, held, stale_checkpoints)  # the previous record moves aside only now
    if stale_checkpoints:
        print("Note: the checkpoints here were made by other code, libraries or data; training from scratch")
    atomic_write_text(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), cfg.dump())


# ------------------------------------------------------------------------------------------ lockstep groups
#: Separates the runs of one lockstep command: ``train.py <run 1's arguments> --and <run 2's arguments> ...``.
LOCKSTEP_SEPARATOR = "--and"
#: Settings of the whole process: every run of a lockstep group must give them the same value.
PROCESS_FLAGS = ("deterministic", "debug")


def split_lockstep(argv: Sequence[str]) -> list[list[str]]:
    """The runs of a command line: its words split at :data:`LOCKSTEP_SEPARATOR` (one run when there is none)."""
    runs: list[list[str]] = [[]]
    for word in argv:
        if word == LOCKSTEP_SEPARATOR:
            runs.append([])
        else:
            runs[-1].append(word)
    return runs


def lockstep_argv(runs: Sequence[Sequence[str]]) -> list[str]:
    """The inverse of :func:`split_lockstep`: one command line training ``runs`` (train.py arguments) in lockstep."""
    out: list[str] = []
    for i, run in enumerate(runs):
        out += ([LOCKSTEP_SEPARATOR] if i else []) + list(run)
    return out


def finished(args, cfg) -> bool:
    """Whether the folder holds the record this run would make now (the identity train.py would record)."""
    from runs import identity, record

    try:
        recorded = (record.read_results(cfg.OUTPUT_DIR).get("run") or {}).get("identity")
    except (OSError, ValueError, AttributeError):
        return False
    expected = identity.identity(cfg, identity.split_sha256(cfg), None, args.opts, args.sweep_opts)
    return recorded is not None and not identity.differences(recorded, expected)


def run_lockstep(argvs: Sequence[Sequence[str]]) -> list[str]:
    """Train the runs of ``argvs`` (each one lone ``train.py`` command's arguments) in lockstep: one data stream
    and one frozen image pass per batch for all of them (runs/lockstep.py); each run keeps its folder, checkpoints,
    log and record, and its predictions are its lone run's. A run whose folder holds its current record is skipped.
    Returns the output folders of the runs trained."""
    parsed = [parse_args(list(a)) for a in argvs]
    for args in parsed:
        if args.eval_only or args.no_train:
            raise UserError(f"{LOCKSTEP_SEPARATOR}: a lockstep group trains runs; {args.output_dir or 'a run'} is "
                            "--eval-only/--no-train: run it on its own")
        if not args.output_dir:
            raise UserError(f"{LOCKSTEP_SEPARATOR}: every run of a lockstep group needs its own --output-dir")
    for flag in PROCESS_FLAGS:
        if len({getattr(a, flag) for a in parsed}) > 1:
            raise UserError(f"{LOCKSTEP_SEPARATOR}: the runs of one process must agree on --{flag}; give it to all "
                            "of them or none")
    cfgs = [setup_cfg(a) for a in parsed]
    dirs = [os.path.abspath(c.OUTPUT_DIR) for c in cfgs]
    if len(set(dirs)) < len(dirs):
        raise UserError(f"{LOCKSTEP_SEPARATOR}: two runs of the group write to the same --output-dir; give each its "
                        "own")
    from runs.lockstep import check_shared_keys

    check_shared_keys(cfgs)  # before anything is built (runs.lockstep.check_group checks what only a build tells)
    todo = []
    for args, cfg in zip(parsed, cfgs):
        if finished(args, cfg):
            print(f"Finished already (its record is current): {cfg.OUTPUT_DIR}")
        else:
            todo.append((args, cfg))
    if not todo:
        return []
    for args, cfg in todo:
        _setup_process(args, cfg)
    with contextlib.ExitStack() as folders:
        for _, cfg in todo:
            folders.enter_context(_locked_folder(cfg))
        if len(todo) == 1:
            _run(*todo[0])
        else:
            from runs.lockstep import Member, train_in_lockstep

            train_in_lockstep([Member(cfg.OUTPUT_DIR, cfg, prepare=lambda a=args, c=cfg: prepare_run(a, c),
                                      begin=lambda t, h, s, c=cfg: begin_run(c, t, h, s))
                               for args, cfg in todo])
    return [cfg.OUTPUT_DIR for _, cfg in todo]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"{LOCKSTEP_SEPARATOR}: 'train.py <run 1> {LOCKSTEP_SEPARATOR} <run 2> ...' trains runs that differ "
               "only in their loss in lockstep (docs/lockstep.md)")
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
    parser.add_argument("--backbone", type=str, default="", metavar="NAME",
                        help="CLIP model (MODEL.BACKBONE.NAME): a shipped one (toy-clip), an OpenAI name (ViT-B/16, "
                             "RN50, ...), an open_clip ARCH:PRETRAINED pair (ViT-B-32:laion2b_s34b_b79k), or a "
                             "weights file (path/to/file.pt)")
    parser.add_argument("--head", type=str, default="", help="name of head")
    parser.add_argument("--eval-only", action="store_true", help="evaluation only")
    parser.add_argument("--model-dir", type=str, default="", help="load model from this directory for eval-only mode")
    parser.add_argument("--load-epoch", type=int, help="load model weights at this epoch for evaluation")
    parser.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    others = " | ".join(n for n in CALIB_NAMES if n != DEFAULT_CALIB)
    parser.add_argument("--calib", nargs="?", const=DEFAULT_CALIB, default=None, metavar="NAME",
                        help=f"calibration objective: bare --calib = the paper's method ({DEFAULT_CALIB}); "
                             f"or {others}")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic algorithms (identical results for identical commands)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("--sweep-opt", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="a setting the sweep applies itself (repeatable; e.g. the toy protocol's epochs): "
                             "merged before the KEY VALUE options, which override it, and recorded as the run's "
                             "sweep_options, not as its options")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="modify config options using the command-line")
    return parser


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    # ``--calib DATASET.NUM_SHOTS 4``: the bare flag followed by opts; give the key back to the opts
    if args.calib is not None and KEY_RE.match(args.calib):
        args.opts = [args.calib] + list(args.opts or [])
        args.calib = DEFAULT_CALIB
    args.opts = list(args.opts or [])
    args.sweep_opts = [word for pair in (args.sweep_opt or []) for word in pair]
    return args


def cli(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    runs = split_lockstep(argv)
    args = parse_args(runs[0])
    try:
        if len(runs) > 1:
            run_lockstep(runs)
        else:
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
