"""TrainerBase -> SimpleTrainer -> TrainerX: the inherited trainer contract of
docs/engine_api.md#trainer-contract.

Differences from Dassl (docs/engine_api.md#dassl-behaviours-we-fix): schedulers are never stepped automatically
(trainers call
``update_lr()`` at the last batch); base ``load_model`` is non-strict, drops class-count-dependent
token buffers and tolerates ``val_result=None``; tensorboard is optional; ``test()`` runs its loop
through the overridable hook ``run_evaluation``; checkpoint contents come from the hook
``checkpoint_state_dict``; a trainer that uses the default evaluation loop (``model_inference`` logits) gets the run
record (trainers/record.py: results.json, predictions.npz) on the test split, as ``PromptTrainer`` does; a
trainer that does not declare ``supports_calib`` refuses ``--calib`` instead of ignoring it.
"""
from __future__ import annotations

import contextlib
import datetime
import io
import os.path as osp
import sys
import time
from collections import OrderedDict

import torch
import torch.nn as nn
from tqdm import tqdm

from common.errors import MissingFileError, UserError

from ..data import DataManager
from ..evaluation import build_evaluator
from ..utils import (
    AverageMeter, MetricMeter, load_checkpoint, mkdir_if_missing, resume_from_checkpoint, save_checkpoint,
    tolist_if_not,
)

# State-dict keys whose shape depends on the class set; dropped when loading across base/new.
CLASS_DEPENDENT_SUFFIXES = ("token_prefix", "token_suffix", "token_midfix")


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

    def checkpoint_state_dict(self, name: str) -> dict:
        """What goes into the checkpoint of model ``name`` (override to keep learnable params only)."""
        return self._models[name].state_dict()

    def save_model(self, epoch: int, directory: str, is_best: bool = False, val_result=None,
                   model_name: str = "") -> None:
        """One checkpoint per registered name: ``directory/<name>/model.pth.tar-<epoch+1>``."""
        for name in self.get_model_names():
            optim, sched = self._optims[name], self._scheds[name]
            save_checkpoint(
                {
                    "state_dict": self.checkpoint_state_dict(name),
                    "epoch": epoch + 1,
                    "optimizer": optim.state_dict() if optim is not None else None,
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "val_result": val_result,
                },
                osp.join(directory, name),
                is_best=is_best,
                model_name=model_name,
            )

    def resume_model_if_exist(self, directory: str) -> int:
        """Resume every registered model from ``directory/<name>/checkpoint``; returns the start epoch."""
        names = self.get_model_names()
        if not names or any(not osp.exists(osp.join(directory, name)) for name in names):
            print("No checkpoint found, train from scratch")
            return 0
        print(f'Found checkpoint at "{directory}" (will resume training)')
        start_epoch = 0
        for name in names:
            start_epoch = resume_from_checkpoint(osp.join(directory, name), self._models[name], self._optims[name],
                                                 self._scheds[name], strict=False)
        return start_epoch

    def load_model(self, directory: str, epoch: int | None = None) -> None:
        """Load ``model-best.pth.tar`` (or ``model.pth.tar-<epoch>``) of every registered model.

        Non-strict, and keys ending in token_prefix/suffix/midfix are dropped, so prompts trained on
        base classes load into a model built for new classes.
        """
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return
        model_file = "model-best.pth.tar" if epoch is None else f"model.pth.tar-{epoch}"
        for name in self.get_model_names():
            model_path = osp.join(directory, name, model_file)
            if not osp.exists(model_path):
                hint = " Pass --load-epoch N to load model.pth.tar-N." if epoch is None else ""
                raise MissingFileError(f'Model not found at "{model_path}".{hint}')
            checkpoint = load_checkpoint(model_path)
            state_dict = OrderedDict((k, v) for k, v in checkpoint["state_dict"].items()
                                     if not k.endswith(CLASS_DEPENDENT_SUFFIXES))
            msg = f'Load {model_path} to {name} (epoch={checkpoint.get("epoch")}'
            if checkpoint.get("val_result") is not None:
                msg += f", val_result={checkpoint['val_result']:.1f}"
            print(msg + ")")
            self._models[name].load_state_dict(state_dict, strict=False)
            self._loaded_from, self._loaded_epoch = osp.abspath(directory), checkpoint.get("epoch")

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
        last_epoch = (self.epoch + 1) == self.max_epoch
        do_test = not self.cfg.TEST.NO_TEST
        freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        meet_checkpoint_freq = freq > 0 and (self.epoch + 1) % freq == 0

        if do_test and self.cfg.TEST.FINAL_MODEL == "best_val":
            curr_result = self.test(split="val")
            if curr_result > self.best_result:
                self.best_result = curr_result
                self.save_model(self.epoch, self.output_dir, val_result=curr_result, model_name="model-best.pth.tar")
        if meet_checkpoint_freq or last_epoch:
            self.save_model(self.epoch, self.output_dir)

    @torch.no_grad()
    def test(self, split: str | None = None) -> float:
        """Evaluate on ``split`` (default TEST.SPLIT; "test" when there is no val loader).

        Returns the first metric (accuracy).
        """
        self.set_model_mode("eval")
        self.evaluator.reset()
        if split is None:
            split = self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            data_loader = self.val_loader
        else:
            split = "test"
            data_loader = self.test_loader
        print(f"Evaluate on the *{split}* set")
        t0 = time.time()
        self._eval_outputs = [] if split == "test" else None  # the default loop collects (logits, labels)
        self._eval_block = None
        results = self.run_evaluation(data_loader, split)
        for k, v in results.items():
            if isinstance(v, (int, float)):
                self.write_scalar(f"{split}/{k}", v, self.epoch)
        if hasattr(self, "dm"):
            self.dm.report_skipped()
        if split == "test" and self._eval_outputs:
            self.write_run_record(results, time.time() - t0)
        if self._eval_block is not None:  # printed after the record: the block means "this run finished"
            print(self._eval_block, end="")
        self._eval_outputs = None
        return list(results.values())[0]

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

    def write_run_record(self, results, eval_seconds: float) -> None:
        """The run record of a trainer that is not a PromptTrainer: the collected test logits and labels, the
        few-shot val split's after training (post-hoc temperature scaling), and what ``record_arrays`` adds."""
        try:
            from trainers import record
        except ImportError:  # the engine on its own: no run record
            return
        logits = torch.cat([o for o, _ in self._eval_outputs]).numpy()
        labels = torch.cat([y for _, y in self._eval_outputs]).numpy()
        arrays = {"logits": logits.astype("float32"), "labels": labels.astype("int64"), **self.record_arrays()}
        if getattr(self, "_trained", False) and self.val_loader is not None:
            self.set_model_mode("eval")
            val_logits, val_labels = self.collect_logits(self.val_loader)
            arrays.update(val_logits=val_logits.numpy(), val_labels=val_labels.numpy())
        record.write_run_record(self, results, arrays, eval_seconds)

    def record_arrays(self) -> dict:
        """Extra predictions.npz arrays (e.g. ``zs_text_features``, ``logit_scale``); CalibHook adds its own."""
        return {}

    def run_evaluation(self, data_loader, split: str) -> OrderedDict:
        """The whole evaluation loop: feed every batch to the evaluator, return its results.

        Override to evaluate differently (e.g. cache features); the default uses
        parse_batch_test -> model_inference -> evaluator.process.
        """
        for batch in tqdm(data_loader, file=sys.stderr, desc=split, dynamic_ncols=True):
            if batch is None:  # every image of the batch was unreadable and skipped
                continue
            input, label = self.parse_batch_test(batch)
            output = self.model_inference(input)
            self.evaluator.process(output, label)
            if getattr(self, "_eval_outputs", None) is not None and torch.is_tensor(output) and output.dim() == 2:
                self._eval_outputs.append((output.detach().float().cpu(), label.detach().cpu()))
        if getattr(self, "_eval_outputs", None) is None:
            return self.evaluator.evaluate()
        block = io.StringIO()
        with contextlib.redirect_stdout(block):
            results = self.evaluator.evaluate()
        self._eval_block = block.getvalue()
        return results

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
