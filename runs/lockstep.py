"""Several training runs that differ only in their loss, trained in lockstep in one process.

Runs such as a method's plain and ``--calib`` variants (or the train-time baselines, or several text-only methods
with the same data settings and seed) see the same images in the same order with the same augmentation, and their
image tower is frozen: each batch's image features are the same for all of them. A lockstep group iterates one
training loader, computes each batch's frozen image features once, and gives them to every member's own training
step. Everything else stays each member's own: its config, output folder, run lock, log.txt, checkpoints, RNG
state, evaluation and run record, exactly what the member writes when it runs alone, and its predictions are the
lone run's bit for bit (on the CPU; ``tests/test_lockstep.py``).

Why that holds: the data stream draws only from the loader's own generators, seeded from the run seed (shuffling,
and random augmentation: ``dassl.data.data_manager.drawing_from``), so it does not depend on what model
initialisation or a method drew; and each member's global RNG state (python, numpy, torch, CUDA) is swapped in
around everything the member does and saved when it stops, so a method that draws random numbers (ProDA's
permutations) draws its lone run's numbers.

The group runs epoch by epoch: the shared loader's epoch is read once (frozen features kept, images dropped; a few
MB even for ImageNet's 16 shots), then each member runs that epoch from the kept batches with the engine's own
epoch loop (``TrainerX.run_epoch``: its log lines, lr steps, tensorboard scalars), then its epoch-end hooks
(checkpoint, validation), and, at its last epoch, its test and record. Members may have different epoch counts;
a member that resumes from a later checkpoint joins the group at that epoch (the data stream's state in its
checkpoint must equal the group's there, which is checked).
"""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from common.errors import UserError
from dassl.config import flatten_cfg
from dassl.utils import get_rng_state, set_rng_state
from trainers.base import SHARED_IMAGE_FEATURES, PromptTrainer

#: Config keys (prefixes) that decide the training data stream and the frozen image features: every member of a
#: group must have the same values.
SHARED_KEYS = ("SEED", "DATASET.", "INPUT.", "DATALOADER.TRAIN_X.", "DATALOADER.NUM_WORKERS",
               "DATALOADER.K_TRANSFORMS", "DATALOADER.RETURN_IMG0", "DATALOADER.SKIP_BAD_IMAGES",
               "MODEL.BACKBONE.", "USE_CUDA", "TRAIN.NUM_THREADS")


class LockstepError(UserError):
    """The runs given cannot share one data stream and image pass."""


@dataclass
class Member:
    """One run of a group: what :func:`train_in_lockstep` needs from the caller (train.py)."""

    name: str                                   # how messages name the run (its output folder)
    cfg: Any
    prepare: Callable[[], tuple]                # builds the trainer, folder untouched: (trainer, held, stale)
    begin: Callable[[Any, Any, list], None]     # starts the run folder: begin(trainer, held, stale)
    trainer: Any = None
    held: Any = None
    stale: list = field(default_factory=list)
    stdout: Any = None
    rng: dict | None = None
    start_epoch: int = 0
    data_state: list = field(default_factory=list)


def shared_key_differences(cfgs: Sequence[Any]) -> list[str]:
    """``KEY: a vs b`` for the :data:`SHARED_KEYS` on which a config differs from the first one."""
    flat = [flatten_cfg(c) for c in cfgs]
    diffs = []
    for i, other in enumerate(flat[1:], 1):
        for key in sorted(set(flat[0]) | set(other)):
            if key.startswith(SHARED_KEYS) and flat[0].get(key) != other.get(key):
                diffs.append(f"{key}: {flat[0].get(key)!r} (run 1) vs {other.get(key)!r} (run {i + 1})")
    return diffs


def check_shared_keys(cfgs: Sequence[Any]) -> None:
    """Refuse configs that differ in a :data:`SHARED_KEYS` key (checked on the configs alone, nothing built)."""
    diffs = shared_key_differences(cfgs)
    if diffs:
        raise LockstepError("runs trained in lockstep must share their data settings and seed; these differ: "
                            + "; ".join(diffs[:6]) + ("; ..." if len(diffs) > 6 else "")
                            + ". Run them separately (LOCKSTEP=0 for the sweep)")


def check_member(m: Member) -> None:
    """A member must be a training run of a text-only prompt method (its image features are frozen CLIP's)."""
    t = m.trainer
    if not isinstance(t, PromptTrainer) or not t.trainable:
        raise LockstepError(f"{m.name}: trainer {m.cfg.TRAINER.NAME} does not train prompts with the shared step "
                            "(trainers.PromptTrainer), so it cannot join a lockstep group; run it alone")
    if t.model.image_prompted:
        raise LockstepError(
            f"{m.name}: {m.cfg.TRAINER.NAME} prompts the image tower (its image features move with training), so "
            "they cannot be computed once for the group; run it alone. Lockstep is for text-only methods (CoOp, "
            "CoCoOp, KgCoOp, ProGrad, ProDA) and their --calib variants")


def check_group(members: Sequence[Member]) -> None:
    """Everything the members share must be equal: the data settings, the data itself, and the image pass."""
    check_shared_keys([m.cfg for m in members])
    first = members[0].trainer
    for m in members[1:]:
        t = m.trainer
        what = [(type(t.model).encode_image is not type(first.model).encode_image, "the image encoding function"),
                (t.precision != first.precision, f"the precision ({first.precision} vs {t.precision})"),
                (t.backbone_fingerprint() != first.backbone_fingerprint(), "the backbone weights"),
                (_train_items(t) != _train_items(first), "the training images (the few-shot draw)")]
        for differs, name in what:
            if differs:
                raise LockstepError(f"{m.name} and {members[0].name} differ in {name}, so they cannot share one "
                                    "image pass; run them separately")


def _train_items(trainer) -> list[tuple]:
    return [(d.impath, d.label, d.domain) for d in trainer.dm.dataset.train_x]


class EpochReplay:
    """A member's training loader in a group: the shared epoch's batches, frozen features instead of images.

    ``generator`` and ``dataset`` are the shared loader's, so checkpoints save (and resume restores) the state of
    the one data stream."""

    def __init__(self, loader):
        self.loader = loader
        self.batches: list = []

    @property
    def generator(self):
        return self.loader.generator

    @property
    def dataset(self):
        return self.loader.dataset

    @property
    def batch_size(self):
        return self.loader.batch_size

    #: A member has no loader workers of its own: the group replays the shared loader's worker streams on resume
    #: (:func:`_train`), so the engine's per-trainer replay (``replay_worker_streams``) has nothing to do here.
    num_workers = 0
    persistent_workers = False

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return iter(self.batches)

    def read_epoch(self, trainer) -> None:
        """One pass over the shared loader: each batch's frozen image features, computed as ``trainer``'s own
        training step computes them (its model's ``encode_image`` under its autocast)."""
        self.batches = []
        for batch in self.loader:
            if batch is None:  # every image unreadable (DATALOADER.SKIP_BAD_IMAGES): the members skip it too
                self.batches.append(None)
                continue
            image = batch["img"].to(trainer.device, non_blocking=True)
            with trainer.autocast():
                features = trainer.model.encode_image(image)
            kept = {k: v for k, v in batch.items() if not k.startswith("img")}
            kept["img"] = torch.empty(0)  # the model never reads it: the features are given
            kept[SHARED_IMAGE_FEATURES] = features.detach()
            self.batches.append(kept)


def _generator_states(loader) -> list:
    gens = [loader.generator, getattr(loader.dataset, "generator", None)]
    return [g.get_state() if g is not None else None for g in gens]


def _same_states(a: list, b: list) -> bool:
    return len(a) == len(b) and all((x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))
                                    for x, y in zip(a, b))


def _set_generator_states(loader, states: list) -> None:
    for g, s in zip([loader.generator, getattr(loader.dataset, "generator", None)], states):
        if g is not None and s is not None:
            g.set_state(s)


def train_in_lockstep(members: Sequence[Member]) -> None:
    """Build, validate and start every member, then train them in lockstep (see the module docstring)."""
    console = sys.stdout
    members = list(members)
    try:
        for m in members:  # build and validate all before any folder is touched
            sys.stdout = console
            trainer, held, stale = m.prepare()
            m.trainer, m.held, m.stale = trainer, held, stale
            m.rng = get_rng_state()
            sys.stdout = console
        for m in members:
            check_member(m)
        check_group(members)
        for m in members:
            sys.stdout = m.held
            m.begin(m.trainer, m.held, m.stale)
            m.stdout = sys.stdout
            sys.stdout = console
        _train(members, console)
    finally:
        sys.stdout = console
        for m in members:
            if m.stdout is not None and hasattr(m.stdout, "close"):
                m.stdout.close()


@contextlib.contextmanager
def _as_member(m: Member, console):
    """Everything ``m`` does runs with its own console tee (log.txt) and its own global RNG state."""
    sys.stdout = m.stdout if m.stdout is not None else console
    set_rng_state(m.rng)
    try:
        yield m.trainer
    finally:
        m.rng = get_rng_state()
        sys.stdout = console


def _train(members: list[Member], console) -> None:
    from dassl.engine import check_max_epoch

    loader = members[0].trainer.train_loader_x
    replay = EpochReplay(loader)
    for m in members:
        m.trainer.train_loader_x = replay
    fresh = _generator_states(loader)  # the data stream of epoch 1 (a member resumes its own state)
    for m in members:  # SimpleTrainer.train / TrainerBase.train up to the epoch loop, per member
        with _as_member(m, console) as t:
            check_max_epoch(t.max_epoch)
            t.before_train()  # resumes the member's checkpoint: its RNG states and the data stream's
            m.start_epoch = t.start_epoch
            m.data_state = _generator_states(loader) if m.start_epoch else fresh
    todo = [m for m in members if m.start_epoch < m.trainer.max_epoch]
    for m in members:
        if m not in todo:  # nothing left to train (a finished checkpoint): test and record as a lone run does
            with _as_member(m, console) as t:
                t.after_train()
    if not todo:
        return
    first = min(m.start_epoch for m in todo)
    if first and loader.num_workers > 0 and loader.persistent_workers:
        # persistent workers keep their augmentation streams in their own processes: load the finished epochs
        # from the start, as a lone run's resume does (TrainerBase.replay_worker_streams), then continue
        _set_generator_states(loader, fresh)
        for _ in range(first):
            for _ in loader:
                pass
    _set_generator_states(loader, next(m.data_state for m in todo if m.start_epoch == first))
    failed: list[tuple[Member, Exception]] = []
    names = ", ".join(m.name for m in todo)
    print(f"Training {len(todo)} runs in lockstep (one data stream, one image pass per batch): {names}")
    for epoch in range(first, max(m.trainer.max_epoch for m in todo)):
        active = [m for m in todo if m.start_epoch <= epoch < m.trainer.max_epoch]  # (todo loses failed members)
        for m in active:
            if m.start_epoch == epoch and epoch > first and not _same_states(m.data_state, _generator_states(loader)):
                raise LockstepError(f"{m.name} resumes at epoch {epoch} with a data stream state that is not the "
                                    "group's there (its checkpoint was saved by other data code); move its "
                                    "checkpoint folder away to train it from scratch, or run it alone")
        if not active:
            continue
        replay.read_epoch(active[0].trainer)
        for m in active:
            try:
                with _as_member(m, console) as t:
                    t.epoch = epoch
                    t.before_epoch()
                    t.run_epoch()
                    t.after_epoch()
                    if epoch + 1 == t.max_epoch:
                        t.after_train()
            except Exception as exc:  # noqa: BLE001  (one member's failure, e.g. a NaN loss, stops that member only)
                failed.append((m, exc))
                todo.remove(m)
                with _as_member(m, console):
                    print(f"Error: {exc}" if isinstance(exc, UserError) else f"Error: {type(exc).__name__}: {exc}")
                    print("This run stopped; the others of its lockstep group go on. Rerun it alone to see the "
                          "full traceback (train.py --debug), or rerun the group to resume it")
        replay.batches = []
    if failed:
        raise LockstepError("; ".join(f"{m.name} failed at epoch {m.trainer.epoch + 1}: {exc}" for m, exc in failed)
                            + f" ({len(failed)} of the group's runs; the others finished)")
