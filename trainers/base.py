"""What every prompt-tuning method shares: the model contract and :class:`PromptTrainer`.

A method supplies a :class:`PromptModel` (how prompts enter CLIP) and, when it has one, its own loss terms. The
trainer does the rest, once for every method: load CLIP once and freeze it, the precision policy, the frozen
zero-shot text features ``F0`` of the current class set, the optimiser over learnable parameters only, the training
step (method loss + ``--calib`` terms), evaluation with text features computed once, checkpoints holding learnable
parameters only, and the run record.
"""
from __future__ import annotations

import contextlib
import io
import os
import os.path as osp
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import clip
from calibration.regularizers import build_objective
from dassl.config import flatten_cfg
from dassl.engine import TrainerX
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import UserError, get_rng_state, load_checkpoint, read_image, save_checkpoint, set_rng_state
from dassl.utils.torchtools import CHECKPOINT_POINTER

from . import record
from .templates import frozen_target_precision, frozen_templates, zeroshot_text_features

PRECISIONS = ("fp16", "fp32", "amp", "bf16")
#: Config keys (prefixes) that do not change what training computes: a run may resume a checkpoint saved under
#: other values of these. Every other key must match the checkpoint's config.
RESUME_FREE_KEYS = ("OUTPUT_DIR", "RESUME", "VERBOSE", "USE_CUDA", "CONFIG_NAME", "DATASET.ROOT", "DATASET.CACHE_DIR",
                    "DATASET.CHECK_IMAGES", "DATALOADER.NUM_WORKERS", "DATALOADER.PIN_MEMORY",
                    "DATALOADER.PERSISTENT_WORKERS", "DATALOADER.TEST.", "TRAIN.PRINT_FREQ", "TRAIN.PROGRESS_BAR",
                    "TRAIN.CHECKPOINT_FREQ", "TRAIN.NUM_THREADS", "TEST.")


class NonFiniteLossError(UserError):
    """The loss became NaN/inf; the message names the epoch, step and every loss term."""


@dataclass
class PromptOutput:
    """The one structured output of every method's forward (DESIGN §4.3)."""

    logits: torch.Tensor                       # B×C, scaled by s = exp(logit_scale)
    text_features: torch.Tensor | None = None  # normalised, C×E (B×C×E for instance-conditional methods)
    image_features: torch.Tensor | None = None  # normalised, B×E
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # the method's own weighted terms
    #: frozen-CLIP image features (normalised, no grad) when the method computed them anyway (PromptSRC);
    #: the zero-shot logits of the baselines reuse them instead of a second frozen pass
    zs_image_features: torch.Tensor | None = None


#: TEST.TEXT_CHUNK -1 (the default): prompts per text-encoder call at evaluation by device. CPU: measured
#: (docs/performance_text_chunk.md: a CoCoOp evaluation batch at 50 prompts per call takes 0.71x (tiny-vit) and
#: 0.92x (ViT-B/16 shapes) the time at 256; small calls stay in the CPU caches). CUDA: 256, reasoned, not measured
#: (no GPU here; larger calls fill the GPU, memory stays bounded).
TEXT_CHUNK_DEFAULTS = {"cpu": 50, "cuda": 256}


def resolve_text_chunk(cfg) -> int:
    """TEST.TEXT_CHUNK as a number of prompts (0 = no chunking; -1 = :data:`TEXT_CHUNK_DEFAULTS` of the device the
    trainer will use, as Dassl picks it: CUDA when available and USE_CUDA)."""
    value = int(cfg.TEST.TEXT_CHUNK) if "TEXT_CHUNK" in cfg.TEST else 0
    if value >= 0:
        return value
    cuda = torch.cuda.is_available() and bool(cfg.get("USE_CUDA", True))
    return TEXT_CHUNK_DEFAULTS["cuda" if cuda else "cpu"]


class PromptModel(nn.Module):
    """A method's model around a frozen CLIP.

    Subclasses create their learnable parameters in ``__init__`` (CLIP is already frozen, so whatever they create is
    learnable) and override :meth:`prepare` and/or :meth:`forward`. The default is CLIP with tuned text features
    from :meth:`encode_text`.
    """

    #: True when the image tower depends on learnable parameters (its features cannot be cached or reused as the
    #: frozen ones).
    image_prompted: bool = False
    #: Name prefixes of learnable parameters that the paper's code creates in fp32 even under PREC fp16 (deep
    #: prompts of IVLP/VPT/MaPLe/PromptSRC, cast to the tower dtype at injection); they stay fp32 masters there.
    fp32_params: tuple[str, ...] = ()

    def __init__(self, cfg, classnames: list[str], clip_model, zs_text_features: torch.Tensor):
        super().__init__()
        self.cfg = cfg
        self.classnames = list(classnames)
        self.clip = clip_model
        self.text_encoder = clip.TextEncoder(clip_model)
        self.image_encoder = clip.VisionEncoder(clip_model)
        self.register_buffer("zs_text_features", zs_text_features, persistent=False)
        self.text_chunk = resolve_text_chunk(cfg)

    # -- frozen towers stay in eval mode whatever the trainer does (RN50 BatchNorm statistics must not move)
    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()
        return self

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale.exp().float()

    @property
    def dtype(self) -> torch.dtype:
        return self.text_encoder.dtype

    def encode_prompts(self, prompts: torch.Tensor, eot_idx: torch.Tensor, deep_prompts=None) -> torch.Tensor:
        """Normalised text features of assembled prompts; chunked over classes at evaluation (bounded memory)."""
        n = prompts.shape[0]
        chunk = self.text_chunk
        if self.training or chunk <= 0 or n <= chunk:
            return F.normalize(self.text_encoder(prompts, eot_idx, deep_prompts).float(), dim=-1)
        parts = [self.text_encoder(prompts[i:i + chunk], eot_idx[i:i + chunk], deep_prompts)
                 for i in range(0, n, chunk)]
        return F.normalize(torch.cat(parts).float(), dim=-1)

    def encode_text(self) -> torch.Tensor:
        """Tuned, normalised class text features C×E. Default: the frozen ones."""
        return self.zs_text_features

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_encoder(image.to(self.image_encoder.dtype)).float(), dim=-1)

    def prepare(self) -> Any:
        """Everything that does not depend on the image: computed once per evaluation, once per training step."""
        return self.encode_text()

    def forward(self, image=None, label=None, *, prepared=None, image_features=None) -> PromptOutput:
        text = self.prepare() if prepared is None else prepared
        f = self.encode_image(image) if image_features is None else image_features
        return PromptOutput(logits=self.logit_scale * f @ text.t(), text_features=text, image_features=f)


def apply_text_options(clip_model, cfg):
    """MODEL.TEXT_TRUNCATE_EOT / MODEL.TEXT_CHECKPOINT_CHUNK onto a loaded CLIP (speed keys: results are equal)."""
    model = cfg.get("MODEL") or {}
    return clip.encoders.set_text_options(clip_model, bool(model.get("TEXT_TRUNCATE_EOT", True)),
                                          int(model.get("TEXT_CHECKPOINT_CHUNK", 0)))


def resolve_precision(prec: str, device: torch.device) -> str:
    prec = str(prec).lower()
    if prec not in PRECISIONS:
        raise UserError(f"TRAINER.<METHOD>.PREC must be one of {PRECISIONS}, got {prec!r}")
    if device.type == "cpu" and prec == "fp16":
        print("Note: PREC fp16 (pure half precision) needs a GPU; running in fp32 on the CPU")
        return "fp32"
    return prec


class PromptTrainer(TrainerX):
    """The shared trainer. A method subclass sets ``model_class`` and ``cfg_node`` and may override
    :meth:`loss_terms` (its own losses) or :meth:`backward_and_update` (e.g. ProGrad's projection)."""

    model_class: type[PromptModel] = PromptModel
    cfg_node: str = "COOP"            # TRAINER.<node> holds the method's keys (PREC at least)
    registered_name: str = "prompt_learner"
    trainable: bool = True            # ZeroshotCLIP sets False
    supports_calib: bool = True       # the shared step adds the --calib terms

    # ------------------------------------------------------------------ build
    @property
    def method_cfg(self):
        return self.cfg.TRAINER[self.cfg_node]

    def build_model(self):
        cfg = self.cfg
        classnames = self.dm.dataset.classnames
        self.precision = resolve_precision(self.method_cfg.get("PREC", "fp32"), self.device)
        weights = {"fp16": "fp16", "bf16": "bf16"}.get(self.precision, "fp32")
        print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME}, weights {weights})")
        clip_model = clip.load(cfg.MODEL.BACKBONE.NAME, device=self.device, precision=weights)
        clip_model.requires_grad_(False)
        clip_model.eval()
        apply_text_options(clip_model, cfg)
        size = getattr(clip_model.visual, "image_size", None)  # checked here, before any image reaches the tower
        size = (size, size) if isinstance(size, int) else tuple(size) if size is not None else None
        if size is not None and tuple(cfg.INPUT.SIZE) != size:
            raise UserError(f"INPUT.SIZE {tuple(cfg.INPUT.SIZE)} does not match the input size {size} of backbone "
                            f"{cfg.MODEL.BACKBONE.NAME!r}; set INPUT.SIZE {size}")

        self.zs_text_features = zeroshot_text_features(
            clip_model, classnames, self.frozen_target_templates(), precision=self.frozen_target_precision()
        ).to(self.device)

        print(f"Building {type(self).__name__} model")
        self.model = self.model_class(cfg, classnames, clip_model, self.zs_text_features).to(self.device)
        learn_dtype = torch.float16 if self.precision == "fp16" else torch.float32
        for n, p in self.learnable_named_parameters():
            p.data = p.data.to(torch.float32 if n.startswith(self.model.fp32_params) else learn_dtype)
        names = [n for n, _ in self.learnable_named_parameters()]
        n_params = sum(p.numel() for p in self.learnable_parameters())
        print(f"Parameters to be updated: {len(names)} tensors, {n_params:,} values")
        if cfg.MODEL.INIT_WEIGHTS:
            if not osp.isfile(cfg.MODEL.INIT_WEIGHTS):
                raise UserError(f"MODEL.INIT_WEIGHTS {cfg.MODEL.INIT_WEIGHTS!r} is not a file; pass a checkpoint "
                                "saved by a training run (<output-dir>/<name>/model.pth.tar-<epoch>)")
            self._load_state(load_checkpoint(cfg.MODEL.INIT_WEIGHTS), cfg.MODEL.INIT_WEIGHTS)

        self.objective = build_objective(cfg)
        if self.trainable and names:
            self.optim = build_optimizer(self.learnable_parameters(), cfg.OPTIM)
            self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
            self.register_model(self.registered_name, self.model, self.optim, self.sched)
        self.autocast_dtype = None
        self.scaler = None
        if self.precision == "amp":
            use_bf16 = self.device.type == "cpu" or torch.cuda.is_bf16_supported()
            self.autocast_dtype = torch.bfloat16 if use_bf16 else torch.float16
            if self.autocast_dtype == torch.float16:
                self.scaler = torch.amp.GradScaler("cuda")
        if not self.model.image_prompted and self.image_path_learnable(self.model.encode_image):
            print(f"Warning: {type(self.model).__name__}.encode_image depends on learnable parameters, so the method "
                  "is treated as image-prompted (its image features are never cached; zero-shot logits take a frozen "
                  "pass); set image_prompted = True on the model class to say so")
            self.model.image_prompted = True

    def frozen_target_templates(self) -> list[str]:
        """Templates of the frozen features F0 (the --calib target, the zero-shot logits). A method may substitute
        its own table (KgCoOp/ProGrad, as the TCPT code does, behind a switch)."""
        kind = self.cfg.TRAINER.CALIB.FROZEN_TEMPLATES if "CALIB" in self.cfg.TRAINER else "single"
        return frozen_templates(self.cfg.DATASET.NAME, kind)

    def frozen_target_precision(self) -> str | None:
        """TRAINER.CALIB.FROZEN_TARGET_PREC: the precision F0's text tower runs in (None: the model's own)."""
        calib = self.cfg.TRAINER.get("CALIB") or {}
        return frozen_target_precision(calib.get("FROZEN_TARGET_PREC", "model"))

    def learnable_named_parameters(self):
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def learnable_parameters(self):
        return [p for _, p in self.learnable_named_parameters()]

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    # ------------------------------------------------------------------ training step
    def parse_batch_train(self, batch):
        return batch["img"].to(self.device, non_blocking=True), batch["label"].to(self.device, non_blocking=True)

    def loss_terms(self, out: PromptOutput, label: torch.Tensor) -> dict[str, torch.Tensor]:
        """The method's loss as named terms: CE plus the method's own (already weighted) terms."""
        return {"ce": F.cross_entropy(out.logits.float(), label), **out.losses}

    def zero_shot_logits(self, image: torch.Tensor | None, out: PromptOutput,
                         frozen_features: torch.Tensor | None = None) -> torch.Tensor:
        """Frozen-CLIP logits of the batch (no_grad): from ``frozen_features`` (normalised) when given, else
        reusing the image features when the image tower is frozen, else by a frozen pass over ``image``."""
        with torch.no_grad():
            if frozen_features is not None:
                f = frozen_features.to(self.device).float()
            elif out.zs_image_features is not None:
                f = out.zs_image_features.detach().float()
            elif not self.model.image_prompted and out.image_features is not None:
                f = out.image_features.detach().float()
            else:
                f = self.frozen_encode_image(image)
            return self.model.logit_scale * f @ self.zs_text_features.t()

    def frozen_encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Normalised image features of frozen CLIP (no prompts), whatever the method does to the image tower."""
        return F.normalize(self.model.clip.encode_image(image.to(self.model.dtype)).float(), dim=-1)

    def compute_loss(self, image, label) -> tuple[torch.Tensor, dict[str, torch.Tensor], PromptOutput]:
        with self.autocast():
            out = self.model(image, label)
        terms = self.loss_terms(out, label)
        if self.objective is not None:
            zs_logits = self.zero_shot_logits(image, out) if self.objective.needs_zs_logits else None
            terms.update(self.objective(out.logits, label, out.text_features, self.zs_text_features,
                                        zs_logits=zs_logits, logit_scale=self.model.logit_scale))
        loss = sum(t.float() for t in terms.values())
        return loss, terms, out

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        loss, terms, out = self.compute_loss(image, label)
        self.check_finite(loss, terms)
        self.backward_and_update(loss, terms)
        summary = {"loss": loss.item(), "acc": (out.logits.argmax(-1) == label).float().mean().item() * 100}
        if len(terms) > 1:
            summary.update({k: v.item() for k, v in terms.items()})
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return summary

    def check_finite(self, loss, terms):
        if torch.isfinite(loss).all():
            return
        values = ", ".join(f"{k}={v.item():.6g}" for k, v in terms.items())
        raise NonFiniteLossError(
            f"non-finite loss at epoch {self.epoch + 1}, step {self.batch_idx + 1}: {values}. "
            "The last saved checkpoint is untouched; lower OPTIM.LR or use PREC fp32/amp.")

    def backward_and_update(self, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        self.optim.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optim)
            self.scaler.update()
        else:
            loss.backward()
            self.optim.step()

    # ------------------------------------------------------------------ evaluation
    def feature_cache_path(self, loader, frozen: bool = False):
        """Where the image features of ``loader``'s images are cached: the key hashes the tower weights, the
        precision, the image-encoding code, the transform and the image list (trainers/feature_cache.py).
        ``frozen``: the features of frozen CLIP (:meth:`frozen_encode_image`) rather than the method's own."""
        from . import feature_cache

        model, dataset = self.model, loader.dataset
        encode = type(self).frozen_encode_image if frozen else type(model).encode_image
        # the code that computes the features: the encode function and what it overrides, CLIP's class (its
        # encode_image), the tower's module classes (clip/encoders.py, open_clip), the transforms, the image reader
        code = [encode] if frozen else [c.__dict__["encode_image"] for c in type(model).__mro__
                                        if "encode_image" in c.__dict__]
        code += [type(model.clip), model.clip.visual, getattr(model, "image_encoder", None) or model.clip.visual,
                 type(dataset), read_image, *getattr(dataset.transform, "transforms", [dataset.transform])]
        cuda = self.device.type == "cuda"
        device = self.device.type + (f":{torch.cuda.get_device_name(self.device)}" if cuda else "")
        key = feature_cache.feature_key(model.clip.visual, dataset.transform, dataset.data_source,
                                        {"precision": self.precision, "device": device,
                                         "encoder": f"{encode.__module__}.{encode.__qualname__}",
                                         "code": feature_cache.code_fingerprint(*code)})
        return feature_cache.cache_dir(self.cfg) / f"{key}.pt"

    def image_path_learnable(self, encode) -> bool:
        """Checked, not declared: whether ``encode`` (images -> features) depends on a learnable parameter
        (:func:`trainers.feature_cache.depends_on_learnable` on one blank image of INPUT.SIZE, in eval mode; the
        RNG states and the model's mode are left as they were). The answer is kept while the function and the
        model's parameters and their ``requires_grad`` flags stay the same, so a cached evaluation runs no image."""
        from . import feature_cache

        signature = (getattr(encode, "__func__", encode),
                     tuple((id(p), p.requires_grad) for p in self.model.parameters()))
        known = self.__dict__.setdefault("_image_path_learnable", {})
        if signature in known:
            return known[signature]
        probe = torch.zeros(1, 3, *self.cfg.INPUT.SIZE, device=self.device)
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        cuda = [self.device.index or torch.cuda.current_device()] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=cuda):
                known[signature] = feature_cache.depends_on_learnable(encode, probe)
        finally:
            for m, mode in modes:
                m.training = mode
        return known[signature]

    @torch.no_grad()
    def image_features(self, loader, frozen: bool = False) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Image features and labels of a loader's images, from the on-disk cache when possible.

        The method's own features (default) are cached only when its image tower is frozen; None when it is
        prompted (``image_prompted``, or checked: :meth:`image_path_learnable`) or the cache is off. ``frozen``:
        frozen CLIP's features, which an image-prompted method needs for the zero-shot logits; cached whenever the
        cache is on (and CLIP is indeed frozen). The cache is best-effort: a failure to read or write it is a
        warning line.
        """
        if not self.cfg.TEST.FEATURE_CACHE or (self.model.image_prompted and not frozen):
            return None
        if frozen and not self.model.image_prompted:
            frozen = False  # the method's own features are frozen CLIP's: one cache entry, not two
        from . import feature_cache

        # the frozen pass runs as zero_shot_logits' own does (outside autocast), so cached == uncached
        encode, context = ((self.frozen_encode_image, contextlib.nullcontext) if frozen
                           else (self.model.encode_image, self.autocast))
        if self.image_path_learnable(encode):  # never read nor write features that training moves
            return None
        path = self.feature_cache_path(loader, frozen)
        hit = feature_cache.load(path, expected=len(loader.dataset))
        if hit is not None:
            print(f"Using cached {'frozen ' if frozen else ''}image features ({len(hit[1])} images) from {path}")
            return hit
        feats, labels = [], []
        from tqdm import tqdm

        for batch in tqdm(loader, desc="image features", leave=False, disable=not self.cfg.VERBOSE):
            if batch is None:
                continue
            image, label = self.parse_batch_test(batch)
            with context():
                feats.append(encode(image).float().cpu())
            labels.append(label.cpu())
        result = torch.cat(feats), torch.cat(labels)
        if len(result[1]) == len(loader.dataset):  # never cache a partial set (skipped unreadable images)
            feature_cache.save(path, *result)
        return result

    @torch.no_grad()
    def predict(self, loader, with_zero_shot: bool = True) -> dict[str, np.ndarray]:
        """Logits, labels, zero-shot logits and the tuned text features over a loader.

        The text side is computed once; frozen image features come from the cache (see :meth:`image_features`).
        """
        self.set_model_mode("eval")
        model = self.model
        with self.autocast():
            prepared = None if getattr(model, "text_per_image", False) else model.prepare()
        logits, labels, zs, texts = [], [], [], []

        # an image-prompted method's zero-shot logits need frozen CLIP's features: cached, not a second pass
        frozen = self.image_features(loader, frozen=True) if with_zero_shot and model.image_prompted else None
        done = 0

        def consume(out, label, image=None):
            nonlocal done
            logits.append(out.logits.float().cpu())
            labels.append(label.cpu())
            if with_zero_shot:
                f = None
                if frozen is not None and torch.equal(frozen[1][done:done + len(label)], label.cpu()):
                    f = frozen[0][done:done + len(label)]  # aligned (a label mismatch falls back to a frozen pass)
                zs.append(self.zero_shot_logits(image, out, f).cpu())
            done += len(label)
            if out.text_features is not None and out.text_features.dim() == 3:
                texts.append(out.text_features.float().mean(0, keepdim=True).cpu())

        cached = self.image_features(loader)
        if cached is not None:
            feats, labs = cached
            step = loader.batch_size or 100
            for i in range(0, len(feats), step):
                f = feats[i:i + step].to(self.device)
                with self.autocast():
                    out = model(prepared=prepared, image_features=f)
                consume(out, labs[i:i + step])
        else:
            from tqdm import tqdm

            for batch in tqdm(loader, desc="eval", leave=False, disable=not self.cfg.VERBOSE):
                if batch is None:  # every image of the batch was unreadable and skipped (DATALOADER.SKIP_BAD_IMAGES)
                    continue
                image, label = self.parse_batch_test(batch)
                with self.autocast():
                    out = model(image, prepared=prepared)
                consume(out, label, image)
        text = None
        if texts:
            text = F.normalize(torch.cat(texts).mean(0), dim=-1)
        elif isinstance(prepared, torch.Tensor):
            text = prepared.float().cpu()
        elif hasattr(prepared, "text_features"):
            text = prepared.text_features.float().cpu()
        return {
            "logits": torch.cat(logits).numpy().astype(np.float32),
            "labels": torch.cat(labels).numpy().astype(np.int64),
            "zs_logits": torch.cat(zs).numpy().astype(np.float32) if zs else None,
            "text_features": None if text is None else text.numpy().astype(np.float32),
        }

    def test(self, split=None):
        """Evaluate on ``split`` (default TEST.SPLIT), print the Dassl block, and write the run record."""
        split = split or self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            loader = self.val_loader
        else:
            split, loader = "test", self.test_loader
        print(f"Evaluate on the *{split}* set")
        t0 = time.time()
        pred = self.predict(loader)
        self.evaluator.reset()
        self.evaluator.process(torch.from_numpy(pred["logits"]), torch.from_numpy(pred["labels"]))
        # The printed block ("* accuracy: ...") is what log parsers take as "this run finished", so on the test
        # split it is printed only once the run record is on disk: a run killed in between is seen as unfinished.
        block = io.StringIO()
        with contextlib.redirect_stdout(block):
            results = self.evaluator.evaluate()
        for k, v in results.items():
            if isinstance(v, (int, float)):
                self.write_scalar(f"{split}/{k}", v, self.epoch)
        self.dm.report_skipped()
        if split == "test":
            self.write_record(results, pred, eval_seconds=time.time() - t0)
        print(block.getvalue(), end="")
        return list(results.values())[0]

    def write_record(self, results, pred, eval_seconds: float) -> None:
        arrays = dict(pred)
        arrays["classnames"] = np.array(self.dm.dataset.classnames)
        arrays["logit_scale"] = np.float32(self.model.logit_scale.item())
        arrays["zs_text_features"] = self.zs_text_features.float().cpu().numpy()
        if getattr(self, "_trained", False) and self.val_loader is not None:
            val = self.predict(self.val_loader)
            arrays.update(val_logits=val["logits"], val_labels=val["labels"], val_zs_logits=val["zs_logits"])
        record.write_run_record(self, results, arrays, eval_seconds)

    def backbone_fingerprint(self) -> str:
        """A short hash of frozen CLIP's weights (both towers; sampled, so cheap even for ViT-L): two run records
        with one backbone name but different weights (a re-trained toy-clip, a replaced weights file) tell apart."""
        from .feature_cache import tower_fingerprint

        return tower_fingerprint(self.model.clip)[:16]

    def run_info(self, eval_seconds: float, num_test: int | None = None) -> dict[str, Any]:
        return record.run_info(self, eval_seconds, num_test)

    # ------------------------------------------------------------------ checkpoints: learnable parameters only
    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu() for n, p in self.learnable_named_parameters()}

    def checkpoint_meta(self) -> dict[str, Any]:
        node = self.method_cfg
        meta = {"trainer": self.cfg.TRAINER.NAME, "backbone": self.cfg.MODEL.BACKBONE.NAME,
                "method_cfg": {k: v for k, v in node.items()}, "classnames": list(self.dm.dataset.classnames),
                "precision": self.precision}
        ident = getattr(self, "identity", None)
        if ident:  # what made these prompts (trainers/identity.py), without the config (stored as "config")
            meta["identity"] = {k: v for k, v in ident.items() if k not in ("config", "options")}
        return meta

    def _rng_generators(self) -> dict:
        return {"train_loader_x": getattr(self.train_loader_x, "generator", None)}

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        """Checkpoint of the learnable parameters plus what resuming needs: optimizer, scheduler, RNG states, and
        the config (``save_checkpoint`` adds the tensors' sha256). Non-finite parameters are never saved, so the
        last checkpoint on disk stays a good one."""
        state = self.checkpoint_state()
        bad = [k for k, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            raise NonFiniteLossError(
                f"learnable parameters {bad} became NaN/inf in epoch {epoch + 1}; they are not saved, the last "
                "saved checkpoint is untouched. Lower OPTIM.LR or use PREC fp32/amp.")
        for name in self.get_model_names():
            save_checkpoint(
                {"state_dict": state, "epoch": epoch + 1,
                 "optimizer": self._optims[name].state_dict() if self._optims[name] else None,
                 "scheduler": self._scheds[name].state_dict() if self._scheds[name] else None,
                 "val_result": val_result, "meta": self.checkpoint_meta(), "config": flatten_cfg(self.cfg),
                 "rng": get_rng_state(self._rng_generators())},
                osp.join(directory, name), is_best=is_best, model_name=model_name)

    @staticmethod
    def _checkpoint_path(directory: str, name: str, epoch: int | None) -> str:
        folder = osp.join(directory, name)
        if epoch is not None:
            return osp.join(folder, f"model.pth.tar-{epoch}")
        if osp.exists(osp.join(folder, "model-best.pth.tar")):
            return osp.join(folder, "model-best.pth.tar")
        pointer = osp.join(folder, "checkpoint")
        if osp.exists(pointer):
            with open(pointer) as f:
                return osp.join(folder, f.readline().strip())
        return osp.join(folder, "model-best.pth.tar")

    def _load_state(self, checkpoint: dict, path: str) -> None:
        state = checkpoint.get("state_dict", checkpoint)
        state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
        meta = checkpoint.get("meta") or {}
        method_diffs = []
        if meta:
            mine = self.checkpoint_meta()
            diffs = [f"{k}: checkpoint {meta[k]!r} vs this run {mine[k]!r}" for k in ("trainer", "backbone")
                     if k in meta and meta[k] != mine[k]]
            if diffs:
                raise UserError(f"checkpoint {path} does not match this run ({'; '.join(diffs)}); "
                                "pass the --model-dir of a run made with the same trainer and backbone")
            theirs, ours = meta.get("method_cfg") or {}, mine["method_cfg"]
            method_diffs = [f"TRAINER.{self.cfg_node}.{k}: checkpoint {theirs[k]!r} vs this run {ours[k]!r}"
                            for k in ours if k in theirs and theirs[k] != ours[k]]
        own = dict(self.learnable_named_parameters())
        missing = [k for k in own if k not in state]
        wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                 if k in state and state[k].shape != own[k].shape]
        if missing or wrong:
            cause = (f"It was trained with other method settings ({'; '.join(method_diffs)})" if method_diffs else
                     "It was made with different prompt settings (e.g. N_CTX, prompt depth)")
            raise UserError(
                f"checkpoint {path} does not fit this model: missing {missing or 'nothing'}; shape mismatch "
                f"{wrong or 'none'}. {cause}; use the same --config-file and TRAINER options as the training run")
        if method_diffs:
            print(f"Note: checkpoint {path} was trained with other method settings: {'; '.join(method_diffs)}")
        with torch.no_grad():
            for k, p in own.items():
                p.copy_(state[k].to(p.dtype))

    def load_model(self, directory, epoch=None):
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return
        names = self.get_model_names()
        if not names:
            return
        for name in names:
            path = self._checkpoint_path(directory, name, epoch)
            if not osp.exists(path):
                raise UserError(f"no checkpoint at {path}; train first, or pass the --model-dir of the training "
                                f"run and --load-epoch of an epoch it saved")
            checkpoint = load_checkpoint(path)
            self._load_state(checkpoint, path)
            self._loaded_from = osp.abspath(directory)
            self._loaded_epoch = checkpoint.get("epoch")
            self._loaded_identity = ((checkpoint.get("meta") or {}).get("identity") or {}).get("id")
            print(f'Loading weights to {name} from "{path}" (epoch = {checkpoint.get("epoch")})')

    def _check_resume_config(self, checkpoint: dict, path: str) -> None:
        """A run resumes only a checkpoint saved under the same training config (see RESUME_FREE_KEYS)."""
        saved = checkpoint.get("config")
        if not saved:  # saved before configs were recorded
            return
        ours = flatten_cfg(self.cfg)
        diffs = [f"{k}: checkpoint {saved[k]!r} vs this run {ours[k]!r}" for k in ours
                 if k in saved and saved[k] != ours[k] and not k.startswith(RESUME_FREE_KEYS)]
        if diffs:
            raise UserError(
                f"cannot resume from {path}: it was saved by a run with another config ({'; '.join(diffs[:8])}"
                f"{'; ...' if len(diffs) > 8 else ''}). Rerun with the checkpoint's settings to resume it, or use "
                f"another --output-dir (or delete {osp.dirname(path)}) to train from scratch")

    def resume_plan(self) -> list[str]:
        """Check, before the run folder is touched, the checkpoints a training run would resume: a config
        mismatch raises (see :meth:`_check_resume_config`); checkpoints made by other code, libraries or data (their
        ``meta.identity``, trainers/identity.py; none recorded counts as other) are returned: they are moved aside
        and training starts from scratch, so a stale run is never finished with new code."""
        directory = self.cfg.RESUME or self.output_dir
        stale = []
        for name in self.get_model_names():
            pointer = osp.join(directory, name, CHECKPOINT_POINTER)
            if not osp.exists(pointer):
                continue
            with open(pointer) as f:
                path = osp.join(directory, name, f.readline().strip())
            if not osp.exists(path):
                continue
            checkpoint = load_checkpoint(path)
            self._check_resume_config(checkpoint, path)
            made = (checkpoint.get("meta") or {}).get("identity") or {}
            ours = getattr(self, "identity", None) or {}
            keys = ("code_sha256", "versions", "split_sha256")
            if ours and any(made.get(k) != ours.get(k) for k in keys):
                if osp.abspath(directory) != osp.abspath(self.output_dir):
                    raise UserError(f"cannot resume from {path}: it was made by other code, libraries or data "
                                    f"(trainers/identity.py); drop --resume to train from scratch")
                stale.append(osp.join(directory, name))
        return stale

    def resume_model_if_exist(self, directory):
        """Resume from the last checkpoint saved (the ``checkpoint`` pointer): parameters, optimizer, scheduler and
        RNG states, so the resumed run continues the interrupted one (same lr schedule and, on the same machine with
        NUM_WORKERS 0, the same numbers)."""
        names = self.get_model_names()
        if not names or not all(osp.exists(osp.join(directory, n, CHECKPOINT_POINTER)) for n in names):
            print("No checkpoint found, train from scratch")
            return 0
        start_epoch = 0
        for name in names:
            with open(osp.join(directory, name, CHECKPOINT_POINTER)) as f:
                path = osp.join(directory, name, f.readline().strip())
            print(f"Resuming from {path}")
            checkpoint = load_checkpoint(path)
            self._check_resume_config(checkpoint, path)
            self._load_state(checkpoint, path)
            if checkpoint.get("optimizer") and self._optims[name] is not None:
                self._optims[name].load_state_dict(checkpoint["optimizer"])
            if checkpoint.get("scheduler") and self._scheds[name] is not None:
                self._scheds[name].load_state_dict(checkpoint["scheduler"])
            start_epoch = checkpoint["epoch"]
            if checkpoint.get("rng") is not None:
                set_rng_state(checkpoint["rng"], self._rng_generators())
        print(f"Resumed at epoch {start_epoch}")
        return start_epoch
