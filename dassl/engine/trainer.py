"""TrainerBase -> SimpleTrainer -> TrainerX: the inherited trainer contract
(docs/engine_api.md#trainer-contract), and the one run lifecycle.

The engine owns the lifecycle of every trainer (docs/architecture.md, "Engine lifecycle"): one checkpoint format
(:meth:`TrainerBase.save_model`), one reader of the ``checkpoint`` pointer file (``dassl.utils.torchtools``),
resume (:meth:`TrainerBase.resume_model_if_exist`), loading (:meth:`TrainerBase.load_model`), the test loop
(:meth:`SimpleTrainer.test`) and the run record (:meth:`SimpleTrainer.write_record`). Trainers fill in hooks:
``checkpoint_state_dict``, ``checkpoint_meta``, ``checkpoint_extra``, ``load_state``, ``after_resume``,
``rng_generators``, ``run_evaluation``, ``record_arrays``, ``val_record_arrays``. The engine imports nothing from
the project: the application registers its run-record writer (:func:`set_record_writer`; default: none, Dassl's
plain behaviour) and its metric function (``dassl.evaluation.set_metric_function``).

Differences from Dassl (docs/engine_api.md#dassl-behaviours-we-fix): schedulers are never stepped automatically (trainers call ``update_lr()`` at the last
batch); a resumable checkpoint is saved after every epoch (only the last one and the multiples of
``TRAIN.CHECKPOINT_FREQ`` are kept); loading is non-strict for class-count-dependent token buffers and tolerates
``val_result=None``; tensorboard is optional; a trainer that does not declare ``supports_calib`` refuses ``--calib``.
"""
from __future__ import annotations

import contextlib
import datetime
import io
import os.path as osp
import sys
import time
from collections import OrderedDict
from typing import Any, Callable

import torch
import torch.nn as nn
from tqdm import tqdm

from common.errors import MissingFileError, UserError

from ..config import flatten_cfg
from ..data import DataManager
from ..evaluation import build_evaluator
from ..utils import (
    AverageMeter, MetricMeter, get_rng_state, load_checkpoint, mkdir_if_missing,
    save_checkpoint, set_rng_state, tolist_if_not,
)
from ..utils.torchtools import last_checkpoint, prune_checkpoints

# State-dict keys whose shape depends on the class set; dropped when loading across base/new.
CLASS_DEPENDENT_SUFFIXES = ("token_prefix", "token_suffix", "token_midfix")
#: Config keys (prefixes) that do not change what training computes: a run may resume a checkpoint saved under
#: other values of these. Every other key must match the checkpoint's config.
RESUME_FREE_KEYS = ("OUTPUT_DIR", "RESUME", "VERBOSE", "USE_CUDA", "CONFIG_NAME", "DATASET.ROOT", "DATASET.CACHE_DIR",
                    "DATASET.CHECK_IMAGES", "DATALOADER.NUM_WORKERS", "DATALOADER.PIN_MEMORY",
                    "DATALOADER.PERSISTENT_WORKERS", "DATALOADER.TEST.", "TRAIN.PRINT_FREQ", "TRAIN.PROGRESS_BAR",
                    "TRAIN.CHECKPOINT_FREQ", "TRAIN.NUM_THREADS", "TEST.")
#: ``meta.identity`` components that make a checkpoint stale when they differ from the run's ``identity``.
STALE_IDENTITY_KEYS = ("code_sha256", "versions", "split_sha256")

RecordWriter = Callable[[Any, dict, dict, float], None]
_record_writer: RecordWriter | None = None


def set_record_writer(writer: RecordWriter | None) -> None:
    """Register the application's run-record writer ``writer(trainer, results, arrays, eval_seconds)``, called
    after each test-split evaluation; None (the default) writes no record."""
    global _record_writer
    _record_writer = writer


class NonFiniteParametersError(UserError):
    """Parameters became NaN/inf; they are not saved, so the last checkpoint on disk stays a good one."""


def _format_seconds(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(round(seconds))))


class TrainerBase:
    """Model registry, checkpoints and the generic epoch loop."""

    def __init__(self):
        self._models: OrderedDict[str, nn.Module] = OrderedDict()
        self._optims: OrderedDict = OrderedDict()
        self._scheds: OrderedDict = OrderedDict()
        self._writer = None

    # ----- registered models -----
    def register_model(self, name: str = "model", model: nn.Module | None = None, optim=None, sched=None) -> None:
        if self.__dict__.get("_models") is None:
            raise AttributeError("Cannot assign model before super().__init__() call")
        if self.__dict__.get("_optims") is None:
            raise AttributeError("Cannot assign optim before super().__init__() call")
        if self.__dict__.get("_scheds") is None:
            raise AttributeError("Cannot assign sched before super().__init__() call")
        assert name not in self._models, f'Found duplicate model name "{name}"'
        self._models[name] = model
        self._optims[name] = optim
        self._scheds[name] = sched

    def get_model_names(self, names=None) -> list[str]:
        names_real = list(self._models.keys())
        if names is not None:
            names = tolist_if_not(names)
            for name in names:
                assert name in names_real, f'Unknown model name "{name}" (registered: {names_real})'
            return names
        return names_real

    # ----- checkpoint hooks (override in trainers) -----
    def checkpoint_state_dict(self, name: str) -> dict:
        """What goes into the checkpoint of model ``name`` (override to keep learnable params only)."""
        return self._models[name].state_dict()

    def checkpoint_meta(self, name: str) -> dict:
        """What made the checkpoint: trainer, backbone, the class names (row order of class-specific parameters)
        and, when the application set ``self.identity``, the run identity without its config."""
        cfg = getattr(self, "cfg", None)
        meta: dict[str, Any] = {}
        if cfg is not None:
            meta.update(trainer=cfg.TRAINER.NAME, backbone=cfg.MODEL.BACKBONE.NAME)
        dm = getattr(self, "dm", None)
        if dm is not None and hasattr(dm, "dataset"):
            meta["classnames"] = list(dm.dataset.classnames)
        ident = getattr(self, "identity", None)
        if ident:
            meta["identity"] = {k: v for k, v in ident.items() if k not in ("config", "options")}
        return meta

    def checkpoint_extra(self, epoch: int) -> dict:
        """Plain data and tensors a resumed run needs besides the parameters (e.g. PromptSRC's running prompt
        average); stored as ``extra`` and handed back to :meth:`after_resume`."""
        return {}

    def rng_generators(self) -> dict[str, torch.Generator]:
        """The named torch Generators saved and restored with the RNG states: the train loader's data order and its
        random augmentation (the data stream's own generators, seeded from the run seed); extend to add a generator
        of your own."""
        loader = getattr(self, "train_loader_x", None)
        return {"train_loader_x": getattr(loader, "generator", None),
                "train_augment": getattr(getattr(loader, "dataset", None), "generator", None)}

    def load_state(self, name: str, checkpoint: dict, path: str) -> None:
        """Load ``checkpoint["state_dict"]`` into model ``name`` (Dassl's rule: non-strict, the class-count-dependent
        token buffers dropped, so prompts trained on base classes load into a model built for new classes)."""
        state = checkpoint.get("state_dict", checkpoint)
        state = OrderedDict((k[7:] if k.startswith("module.") else k, v) for k, v in state.items()
                            if not k.endswith(CLASS_DEPENDENT_SUFFIXES))
        saved = (checkpoint.get("meta") or {}).get("classnames")
        current = list(self.dm.dataset.classnames) if hasattr(getattr(self, "dm", None), "dataset") else None
        if saved and current and list(saved) != current:
            rows = [k for k, v in state.items() if torch.is_tensor(v) and v.dim() > 1 and v.shape[0] == len(saved)]
            if rows:
                print(f"Warning: {path} was trained on other classes ({len(saved)}; this run has {len(current)}) and "
                      f"{rows} have one row per trained class; they load by position, not by class name. A "
                      "PromptTrainer method maps such rows by name (docs/adding_a_method.md, 'Parameters that "
                      "belong to classes')")
        try:
            result = self._models[name].load_state_dict(state, strict=False)
        except RuntimeError as e:  # a shape mismatch
            raise UserError(f'checkpoint "{path}" does not fit model {name}: {str(e).splitlines()[-1].strip()}; '
                            "evaluate with the settings (and, for per-class parameters, the classes) it was trained "
                            "with") from None
        if result.unexpected_keys:
            raise UserError(f'checkpoint "{path}" does not match model {name} (unexpected keys: '
                            f"{result.unexpected_keys[:5]}); pass the --model-dir of a run of this trainer")

    def after_resume(self, checkpoint: dict, start_epoch: int) -> None:
        """Called once the last checkpoint is loaded, with it (``checkpoint["extra"]``) and the epoch to start at."""

    def check_resume(self, checkpoint: dict, path: str) -> None:
        """A run resumes only a checkpoint saved under the same training config (see :data:`RESUME_FREE_KEYS`)."""
        saved = checkpoint.get("config")
        if not saved or getattr(self, "cfg", None) is None:  # saved before configs were recorded
            return
        ours = flatten_cfg(self.cfg)
        diffs = [f"{k}: checkpoint {saved[k]!r} vs this run {ours[k]!r}" for k in ours
                 if k in saved and saved[k] != ours[k] and not k.startswith(RESUME_FREE_KEYS)]
        if diffs:
            raise UserError(
                f"cannot resume from {path}: it was saved by a run with another config ({'; '.join(diffs[:8])}"
                f"{'; ...' if len(diffs) > 8 else ''}). Rerun with the checkpoint's settings to resume it, or use "
                f"another --output-dir (or delete {osp.dirname(path)}) to train from scratch")

    def stale_checkpoint(self, checkpoint: dict) -> bool:
        """Whether a checkpoint was made by other code, libraries or data than this run (its ``meta.identity``
        against ``self.identity``; none recorded counts as other). Without ``self.identity``: never."""
        ours = getattr(self, "identity", None) or {}
        made = (checkpoint.get("meta") or {}).get("identity") or {}
        return bool(ours) and any(made.get(k) != ours.get(k) for k in STALE_IDENTITY_KEYS)

    # ----- the lifecycle: save, resume, load -----
    def save_model(self, epoch: int, directory: str, is_best: bool = False, val_result=None,
                   model_name: str = "") -> None:
        """One checkpoint per registered name, ``directory/<name>/model.pth.tar-<epoch+1>`` (or ``model_name``):
        ``state_dict``, ``epoch``, ``optimizer``, ``scheduler``, ``val_result``, ``best_result``, ``meta``,
        ``config`` (flat), ``rng`` and ``extra``, all plain data and tensors (loadable with weights_only=True);
        ``save_checkpoint`` adds the tensors' ``sha256``. Non-finite parameters are never saved. After an epoch
        checkpoint, the older ones are deleted except the multiples of TRAIN.CHECKPOINT_FREQ."""
        cfg = getattr(self, "cfg", None)
        for name in self.get_model_names():
            state = self.checkpoint_state_dict(name)
            bad = [k for k, t in state.items()
                   if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all()]
            if bad:
                raise NonFiniteParametersError(
                    f"learnable parameters {bad} became NaN/inf in epoch {epoch + 1}; they are not saved, the last "
                    "saved checkpoint is untouched. Lower OPTIM.LR or use PREC fp32/amp.")
            optim, sched = self._optims[name], self._scheds[name]
            path = save_checkpoint(
                {"state_dict": state, "epoch": epoch + 1,
                 "optimizer": optim.state_dict() if optim is not None else None,
                 "scheduler": sched.state_dict() if sched is not None else None,
                 "val_result": val_result, "best_result": getattr(self, "best_result", None),
                 "meta": self.checkpoint_meta(name), "config": flatten_cfg(cfg) if cfg is not None else None,
                 "rng": get_rng_state(self.rng_generators()), "extra": self.checkpoint_extra(epoch)},
                osp.join(directory, name), is_best=is_best, model_name=model_name)
            if not model_name:
                freq = int(cfg.TRAIN.CHECKPOINT_FREQ) if cfg is not None else 0
                prune_checkpoints(osp.join(directory, name), path, freq)

    def resume_plan(self) -> list[str]:
        """Check, before the run folder is touched, the checkpoints a training run would resume: a config mismatch
        raises (:meth:`check_resume`); the folders of stale ones (:meth:`stale_checkpoint`) are returned, to be
        moved aside so that training starts from scratch (a stale run is never finished with new code)."""
        directory = self.cfg.RESUME or self.output_dir
        stale = []
        for name in self.get_model_names():
            path = last_checkpoint(osp.join(directory, name))
            if path is None:
                continue
            checkpoint = load_checkpoint(path)
            self.check_resume(checkpoint, path)
            if self.stale_checkpoint(checkpoint):
                if osp.abspath(directory) != osp.abspath(self.output_dir):
                    raise UserError(f"cannot resume from {path}: it was made by other code, libraries or data "
                                    "(its run identity differs); drop --resume to train from scratch")
                stale.append(osp.join(directory, name))
        return stale

    def resume_model_if_exist(self, directory: str) -> int:
        """Resume every registered model from the last checkpoint of ``directory/<name>`` (parameters, optimiser,
        scheduler, RNG states and :meth:`checkpoint_extra`), so the resumed run continues the interrupted one
        exactly; returns the epoch to start from."""
        names = self.get_model_names()
        paths = {name: last_checkpoint(osp.join(directory, name)) for name in names}
        if not names or any(p is None for p in paths.values()):
            print("No checkpoint found, train from scratch")
            return 0
        print(f'Found checkpoint at "{directory}" (will resume training)')
        start_epoch, checkpoint = 0, {}
        for name in names:
            print(f"Resuming from {paths[name]}")
            checkpoint = load_checkpoint(paths[name])
            self.check_resume(checkpoint, paths[name])
            self.load_state(name, checkpoint, paths[name])
            if checkpoint.get("optimizer") and self._optims[name] is not None:
                self._optims[name].load_state_dict(checkpoint["optimizer"])
            if checkpoint.get("scheduler") and self._scheds[name] is not None:
                self._scheds[name].load_state_dict(checkpoint["scheduler"])
            start_epoch = int(checkpoint["epoch"])
        if checkpoint.get("best_result") is not None:
            self.best_result = checkpoint["best_result"]
        if checkpoint.get("rng") is not None:
            self.replay_worker_streams(start_epoch)
            set_rng_state(checkpoint["rng"], self.rng_generators())
        self.after_resume(checkpoint, start_epoch)
        print(f"Previous epoch: {start_epoch}")
        print(f"Resumed at epoch {start_epoch}")
        return start_epoch

    def replay_worker_streams(self, epochs: int) -> None:
        """Persistent loader workers (DATALOADER.PERSISTENT_WORKERS, NUM_WORKERS > 0) keep their random streams
        (augmentations) in their own processes across epochs, out of reach of a checkpoint. A resumed run, whose
        loader generator is still at its start, iterates the train loader for the finished epochs without training,
        so its workers draw exactly what the interrupted run's drew and the next epochs continue their streams."""
        loader = getattr(self, "train_loader_x", None)
        if not epochs or loader is None or not (loader.num_workers > 0 and loader.persistent_workers):
            return
        print(f"Replaying the data loading of {epochs} epoch(s), so the persistent loader workers' random streams "
              "continue exactly where the interrupted run's were")
        for _ in range(epochs):
            for _ in loader:
                pass

    #: Without --load-epoch, load model-best.pth.tar; True: the last checkpoint saved when there is no best one.
    load_last_without_best: bool = False

    @classmethod
    def checkpoint_path(cls, directory: str, name: str, epoch: int | None) -> str:
        """The file :meth:`load_model` reads: ``model.pth.tar-<epoch>``, else ``model-best.pth.tar`` (or, with
        :attr:`load_last_without_best`, the last checkpoint saved when there is no best one)."""
        folder = osp.join(directory, name)
        if epoch is not None:
            return osp.join(folder, f"model.pth.tar-{epoch}")
        best = osp.join(folder, "model-best.pth.tar")
        if cls.load_last_without_best and not osp.exists(best):
            return last_checkpoint(folder) or best
        return best

    def load_model(self, directory: str, epoch: int | None = None) -> None:
        """Load every registered model from ``directory`` (see :meth:`checkpoint_path`) through :meth:`load_state`."""
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return
        for name in self.get_model_names():
            path = self.checkpoint_path(directory, name, epoch)
            if not osp.exists(path):
                hint = " (or pass --load-epoch N to load model.pth.tar-N)" if epoch is None else ""
                raise MissingFileError(f'no checkpoint at "{path}"; train first, or pass the --model-dir of the '
                                       f"training run and the --load-epoch of an epoch it saved{hint}")
            checkpoint = load_checkpoint(path)
            self.load_state(name, checkpoint, path)
            msg = f'Load {path} to {name} (epoch={checkpoint.get("epoch")}'
            if checkpoint.get("val_result") is not None:
                msg += f", val_result={checkpoint['val_result']:.1f}"
            print(msg + ")")
            self._loaded_from, self._loaded_epoch = osp.abspath(directory), checkpoint.get("epoch")
            self._loaded_identity = ((checkpoint.get("meta") or {}).get("identity") or {}).get("id")

    def set_model_mode(self, mode: str = "train", names=None) -> None:
        """train()/eval() on the registered modules only (frozen towers keep their own mode)."""
        for name in self.get_model_names(names):
            if mode == "train":
                self._models[name].train()
            elif mode in ("test", "eval"):
                self._models[name].eval()
            else:
                raise KeyError(f'Unknown model mode "{mode}"')

    def update_lr(self, names=None) -> None:
        """Step every registered scheduler. Trainers call it once per epoch; the engine never does."""
        for name in self.get_model_names(names):
            if self._scheds[name] is not None:
                self._scheds[name].step()

    def detect_anomaly(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss).all():
            raise FloatingPointError("Loss is infinite or NaN!")

    # ----- tensorboard (optional) -----
    def init_writer(self, log_dir: str) -> None:
        """Start a SummaryWriter in ``log_dir``; without tensorboard, write_scalar stays a no-op."""
        if self._writer is not None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("Note: tensorboard is not installed, scalars are not logged")
            return
        mkdir_if_missing(log_dir)
        print(f"Initialize tensorboard (log_dir={log_dir})")
        self._writer = SummaryWriter(log_dir=log_dir)

    def close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write_scalar(self, tag: str, scalar_value, global_step=None) -> None:
        if self._writer is not None:
            self._writer.add_scalar(tag, scalar_value, global_step)

    # ----- the loop -----
    def train(self, start_epoch: int, max_epoch: int) -> None:
        self.start_epoch = start_epoch
        self.max_epoch = max_epoch
        self.before_train()
        for self.epoch in range(self.start_epoch, self.max_epoch):
            self.before_epoch()
            self.run_epoch()
            self.after_epoch()
        self.after_train()

    def before_train(self):
        pass

    def after_train(self):
        pass

    def before_epoch(self):
        pass

    def after_epoch(self):
        pass

    def run_epoch(self):
        raise NotImplementedError

    def test(self):
        raise NotImplementedError

    def parse_batch_train(self, batch):
        raise NotImplementedError

    def parse_batch_test(self, batch):
        raise NotImplementedError

    def forward_backward(self, batch):
        raise NotImplementedError

    def model_inference(self, input):
        raise NotImplementedError

    # ----- optimisation helpers -----
    def model_zero_grad(self, names=None) -> None:
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].zero_grad()

    def model_backward(self, loss: torch.Tensor) -> None:
        self.detect_anomaly(loss)
        loss.backward()

    def model_update(self, names=None) -> None:
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].step()

    def model_backward_and_update(self, loss: torch.Tensor, names=None) -> None:
        self.model_zero_grad(names)
        self.model_backward(loss)
        self.model_update(names)


def check_max_epoch(max_epoch) -> None:
    """Training needs at least one epoch: with OPTIM.MAX_EPOCH < 1 a run would record untrained prompts as a
    finished training run."""
    if isinstance(max_epoch, bool) or not isinstance(max_epoch, int) or max_epoch < 1:
        raise UserError(f"OPTIM.MAX_EPOCH must be at least 1 to train, got {max_epoch!r}; set OPTIM.MAX_EPOCH 1 or "
                        "more (to evaluate without training: --eval-only --model-dir <training run>, or --trainer "
                        "ZeroshotCLIP)")


class SimpleTrainer(TrainerBase):
    """Builds data, model and evaluator from ``cfg``; epoch hooks, checkpoints and testing."""

    def __init__(self, cfg):
        super().__init__()
        self.check_cfg(cfg)  # before self.cfg exists (Dassl order)
        self.check_calib_support(cfg)
        if torch.cuda.is_available() and cfg.USE_CUDA:
            self.device = torch.device("cuda")
        else:
            self.device = torch.device("cpu")
        self.start_epoch = self.epoch = 0
        self.max_epoch = cfg.OPTIM.MAX_EPOCH
        self.output_dir = cfg.OUTPUT_DIR
        self.cfg = cfg
        self.build_data_loader()
        self.build_model()
        self.evaluator = build_evaluator(cfg, lab2cname=self.lab2cname)
        self.best_result = -float("inf")

    def check_cfg(self, cfg) -> None:
        """Check the config before anything is built (``self.cfg`` does not exist yet)."""

    #: True when the trainer adds the --calib terms to its loss (PromptTrainer; trainers.calib_hook.CalibHook)
    supports_calib: bool = False

    def check_calib_support(self, cfg) -> None:
        calib = cfg.TRAINER.CALIB.get("NAME", "") if "CALIB" in cfg.TRAINER else ""
        if calib and not self.supports_calib:
            raise UserError(
                f"--calib {calib}: trainer {cfg.TRAINER.NAME} ({type(self).__module__}) does not add calibration "
                "terms to its loss, so the flag would be ignored. Subclass trainers.PromptTrainer, or mix in "
                "trainers.calib_hook.CalibHook (docs/adding_a_method.md, 'Porting a CoOp-family trainer'); or "
                "drop --calib")

    def build_data_loader(self) -> None:
        dm = DataManager(self.cfg)
        self.train_loader_x = dm.train_loader_x
        self.train_loader_u = dm.train_loader_u
        self.val_loader = dm.val_loader
        self.test_loader = dm.test_loader
        self.num_classes = dm.num_classes
        self.num_source_domains = dm.num_source_domains
        self.lab2cname = dm.lab2cname
        self.dm = dm

    def build_model(self) -> None:
        """Build ``self.model`` and register_model() its trainable parts (subclasses)."""
        raise NotImplementedError("The trainer must override build_model()")

    def train(self) -> None:
        check_max_epoch(self.max_epoch)
        super().train(self.start_epoch, self.max_epoch)

    def before_train(self) -> None:
        self._train_t0 = time.time()
        directory = self.cfg.RESUME if self.cfg.RESUME else self.output_dir
        if self.cfg.RESUME and not osp.isdir(self.cfg.RESUME):  # an explicit --resume must name a real folder
            raise MissingFileError(f'--resume / RESUME "{self.cfg.RESUME}" is not a folder; pass the --output-dir '
                                   "of the run to resume, or drop --resume to train from scratch")
        self.start_epoch = self.resume_model_if_exist(directory)
        self.init_writer(osp.join(self.output_dir, "tensorboard"))
        self.time_start = time.time()

    def after_train(self) -> None:
        self._trained = True
        self._train_seconds = time.time() - getattr(self, "_train_t0", time.time())
        print("Finish training")
        print("Finished training")  # pre-2022 wording, read by MaPLe's parse_test_res
        if not self.cfg.TEST.NO_TEST:
            if self.cfg.TEST.FINAL_MODEL == "best_val":
                print("Deploy the model with the best val performance")
                self.load_model(self.output_dir)
            else:
                print("Deploy the last-epoch model")
            self.test()
        print(f"Elapsed: {_format_seconds(time.time() - self.time_start)}")
        self.close_writer()

    def after_epoch(self) -> None:
        """The best-val checkpoint when TEST.FINAL_MODEL is best_val, then a resumable checkpoint of every epoch
        (the older ones are pruned, see :meth:`save_model`)."""
        if not self.cfg.TEST.NO_TEST and self.cfg.TEST.FINAL_MODEL == "best_val":
            curr_result = self.test(split="val")
            if curr_result > self.best_result:
                self.best_result = curr_result
                self.save_model(self.epoch, self.output_dir, val_result=curr_result, model_name="model-best.pth.tar")
        self.save_model(self.epoch, self.output_dir)

    def eval_loader(self, split: str | None) -> tuple[str, Any]:
        """``split`` (default TEST.SPLIT; "test" when there is no val loader) and its loader."""
        split = split or self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            return split, self.val_loader
        return "test", self.test_loader

    @torch.no_grad()
    def test(self, split: str | None = None) -> float:
        """Evaluate on ``split`` through :meth:`run_evaluation`, write the run record of a test-split evaluation
        (:meth:`write_record`), then print Dassl's result block. Returns the first metric (accuracy).

        The block ("* accuracy: ...") is what log parsers take as "this run finished", so it is printed only once
        the record is on disk: a run killed in between is seen as unfinished."""
        split, data_loader = self.eval_loader(split)
        print(f"Evaluate on the *{split}* set")
        t0 = time.time()
        self.set_model_mode("eval")
        self.evaluator.reset()
        arrays = self.run_evaluation(data_loader, split)
        block = io.StringIO()
        with contextlib.redirect_stdout(block):
            results = self.evaluator.evaluate()
        for k, v in results.items():
            if isinstance(v, (int, float)):
                self.write_scalar(f"{split}/{k}", v, self.epoch)
        if hasattr(self, "dm"):
            self.dm.report_skipped()
        if split == "test" and arrays:
            self.write_record(results, arrays, time.time() - t0)
        print(block.getvalue(), end="")
        return list(results.values())[0]

    def run_evaluation(self, data_loader, split: str) -> dict | None:
        """Feed every batch of ``data_loader`` to the evaluator; return the arrays of the run record (``logits``
        float32 N×C, ``labels`` int64 N, ...) or None when there are none (outputs that are not logits).

        The default: parse_batch_test -> model_inference -> evaluator.process, collecting the logits."""
        logits, labels, collect = [], [], True
        for batch in tqdm(data_loader, file=sys.stderr, desc=split, dynamic_ncols=True):
            if batch is None:  # every image of the batch was unreadable and skipped
                continue
            input, label = self.parse_batch_test(batch)
            output = self.model_inference(input)
            self.evaluator.process(output, label)
            collect = collect and torch.is_tensor(output) and output.dim() == 2
            if collect:
                logits.append(output.detach().float().cpu())
                labels.append(label.detach().cpu())
        if not (collect and logits):
            return None
        return {"logits": torch.cat(logits).numpy().astype("float32"),
                "labels": torch.cat(labels).numpy().astype("int64")}

    def collect_logits(self, data_loader) -> tuple[torch.Tensor, torch.Tensor]:
        """``model_inference`` logits and the labels over a loader (float32, int64, on the CPU)."""
        logits, labels = [], []
        for batch in data_loader:
            if batch is None:
                continue
            input, label = self.parse_batch_test(batch)
            logits.append(self.model_inference(input).detach().float().cpu())
            labels.append(label.cpu())
        return torch.cat(logits), torch.cat(labels)

    def write_record(self, results, arrays: dict, eval_seconds: float) -> None:
        """The run record through the application's writer (:func:`set_record_writer`; none: nothing written):
        the evaluation's ``arrays``, :meth:`record_arrays`, and after training :meth:`val_record_arrays`."""
        writer = _record_writer
        if writer is None:
            return
        arrays = {**arrays, **self.record_arrays()}
        if getattr(self, "_trained", False) and self.val_loader is not None:
            self.set_model_mode("eval")
            arrays.update(self.val_record_arrays())
        writer(self, results, arrays, eval_seconds)

    def record_arrays(self) -> dict:
        """Extra predictions.npz arrays (e.g. ``zs_text_features``, ``logit_scale``); CalibHook adds its own."""
        return {}

    def val_record_arrays(self) -> dict:
        """The few-shot val split's arrays of a trained run (post-hoc calibrators fit on them)."""
        val_logits, val_labels = self.collect_logits(self.val_loader)
        return {"val_logits": val_logits.numpy(), "val_labels": val_labels.numpy()}

    def model_inference(self, input):
        return self.model(input)

    def parse_batch_test(self, batch):
        input = batch["img"].to(self.device)
        label = batch["label"].to(self.device)
        return input, label

    def get_current_lr(self, names=None) -> float:
        name = self.get_model_names(names)[0]
        return self._optims[name].param_groups[0]["lr"]


class TrainerX(SimpleTrainer):
    """Trainer on labelled data only (train_loader_x)."""

    def run_epoch(self) -> None:
        self.set_model_mode("train")
        losses = MetricMeter()
        batch_time = AverageMeter()
        data_time = AverageMeter()
        self.num_batches = len(self.train_loader_x)
        print_freq = self.cfg.TRAIN.PRINT_FREQ

        loader = self.train_loader_x
        if self.cfg.TRAIN.PROGRESS_BAR:
            loader = tqdm(loader, file=sys.stderr, desc=f"epoch {self.epoch + 1}/{self.max_epoch}",
                          dynamic_ncols=True, leave=False)
        end = time.time()
        for self.batch_idx, batch in enumerate(loader):
            data_time.update(time.time() - end)
            if batch is None:  # all images unreadable (SKIP_BAD_IMAGES): keep the per-epoch lr step
                if self.batch_idx + 1 == self.num_batches:
                    self.update_lr()
                end = time.time()
                continue
            loss_summary = self.forward_backward(batch)
            batch_time.update(time.time() - end)
            losses.update(loss_summary)

            meet_freq = (self.batch_idx + 1) % print_freq == 0
            only_few_batches = self.num_batches < print_freq
            if meet_freq or only_few_batches:
                nb_remain = (self.num_batches - self.batch_idx - 1) + (
                    self.max_epoch - self.epoch - 1) * self.num_batches
                eta = _format_seconds(batch_time.avg * nb_remain)
                print(" ".join([
                    f"epoch [{self.epoch + 1}/{self.max_epoch}]",
                    f"batch [{self.batch_idx + 1}/{self.num_batches}]",
                    f"time {batch_time.val:.3f} ({batch_time.avg:.3f})",
                    f"data {data_time.val:.3f} ({data_time.avg:.3f})",
                    f"{losses}",
                    f"lr {self.get_current_lr():.4e}",
                    f"eta {eta}",
                ]))

            n_iter = self.epoch * self.num_batches + self.batch_idx
            for name, meter in losses.meters.items():
                self.write_scalar("train/" + name, meter.avg, n_iter)
            self.write_scalar("train/lr", self.get_current_lr(), n_iter)
            end = time.time()

    def parse_batch_train(self, batch):
        input = batch["img"].to(self.device)
        label = batch["label"].to(self.device)
        domain = batch["domain"].to(self.device)
        return input, label, domain
