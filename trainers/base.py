"""What every prompt-tuning method shares: the model contract and :class:`PromptTrainer`.

A method supplies a :class:`PromptModel` (how prompts enter CLIP) and, when it has one, its own loss terms. The
trainer does the rest, once for every method: load CLIP once and freeze it, the precision policy, the frozen
zero-shot text features ``F0`` of the current class set, the optimiser over learnable parameters only, the training
step (method loss + ``--calib`` terms) and evaluation with text features computed once. Checkpoints, resume, the
test loop and the run record are the engine's (docs/architecture.md §6); this class fills in its hooks.
"""
from __future__ import annotations

import contextlib
import os.path as osp
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import clip
from calibration.regularizers import build_objective
from common.errors import UserError
from dassl.engine import TrainerX
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import load_checkpoint

from .class_params import fit_state
from .feature_cache import CachedFeatures
from .templates import FrozenTarget, zeroshot_text_features

PRECISIONS = ("fp16", "fp32", "amp", "bf16")
#: Batch key of frozen image features computed once for several trainers (runs/lockstep.py); a batch with it is fed
#: to the model as ``image_features=`` instead of encoding ``img``.
SHARED_IMAGE_FEATURES = "shared_image_features"


class NonFiniteLossError(UserError):
    """The loss became NaN/inf; the message names the epoch, step and every loss term."""


@dataclass
class PromptOutput:
    """The one structured output of every method's forward
    (docs/method_notes.md#what-each-method-gives-the-shared-step)."""

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

    def class_specific(self) -> dict[str, str]:
        """Learnable parameters whose row *i* belongs to class ``self.classnames[i]``, with the rule for a class a
        loaded checkpoint has no row for: ``"zero"``, ``"init"`` or ``"refuse"`` (trainers/class_params.py). Loading
        onto another class set maps their rows by class name. Default: none."""
        return {}

    #: Why a ``"refuse"`` rule refuses (shown in the error).
    unseen_classes_reason: str = ""

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


class PromptTrainer(CachedFeatures, FrozenTarget, TrainerX):
    """The shared trainer. A method subclass sets ``model_class`` and ``cfg_node`` and may override
    :meth:`loss_terms` (its own losses) or :meth:`backward_and_update` (e.g. ProGrad's projection). The lifecycle
    (checkpoints, resume, the test loop, the run record) is the engine's; this class fills in its hooks."""

    model_class: type[PromptModel] = PromptModel
    cfg_node: str = "COOP"            # TRAINER.<node> holds the method's keys (PREC at least)
    registered_name: str = "prompt_learner"
    trainable: bool = True            # ZeroshotCLIP sets False
    supports_calib: bool = True       # the shared step adds the --calib terms
    load_last_without_best = True     # eval-only without --load-epoch: model-best, else the last checkpoint

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
            self.load_state(self.registered_name, load_checkpoint(cfg.MODEL.INIT_WEIGHTS), cfg.MODEL.INIT_WEIGHTS)

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

    def compute_loss(self, image, label, image_features=None) -> tuple[torch.Tensor, dict[str, torch.Tensor],
                                                                     PromptOutput]:
        """``image_features``: the batch's frozen image features when a caller computed them already (a lockstep
        group shares one image pass, runs/lockstep.py); the model then does not encode ``image``."""
        with self.autocast():
            out = (self.model(image, label) if image_features is None
                   else self.model(image, label, image_features=image_features))
        terms = self.loss_terms(out, label)
        if self.objective is not None:
            zs_logits = self.zero_shot_logits(image, out) if self.objective.needs_zs_logits else None
            terms.update(self.objective(out.logits, label, out.text_features, self.zs_text_features,
                                        zs_logits=zs_logits, logit_scale=self.model.logit_scale))
        loss = sum(t.float() for t in terms.values())
        return loss, terms, out

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        shared = batch.get(SHARED_IMAGE_FEATURES)
        loss, terms, out = (self.compute_loss(image, label) if shared is None
                            else self.compute_loss(image, label, image_features=shared))
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

    def run_evaluation(self, data_loader, split: str) -> dict:
        """The engine's evaluation hook: :meth:`predict` (text side once, cached image features), fed to the
        evaluator; its arrays are the run record's."""
        pred = self.predict(data_loader)
        self.evaluator.process(torch.from_numpy(pred["logits"]), torch.from_numpy(pred["labels"]))
        return pred

    def record_arrays(self) -> dict:
        return {"classnames": np.array(self.dm.dataset.classnames),
                "logit_scale": np.float32(self.model.logit_scale.item()),
                "zs_text_features": self.zs_text_features.float().cpu().numpy()}

    def val_record_arrays(self) -> dict:
        val = self.predict(self.val_loader)
        return {"val_logits": val["logits"], "val_labels": val["labels"], "val_zs_logits": val["zs_logits"]}

    def backbone_fingerprint(self) -> str:
        """A short hash of frozen CLIP's weights (both towers; sampled, so cheap even for ViT-L): two run records
        with one backbone name but different weights (a re-trained toy-clip, a replaced weights file) tell apart."""
        from .feature_cache import tower_fingerprint

        return tower_fingerprint(self.model.clip)[:16]

    # ------------------------------------------------------------------ checkpoint hooks: learnable parameters only
    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu() for n, p in self.learnable_named_parameters()}

    def checkpoint_state_dict(self, name: str) -> dict[str, torch.Tensor]:
        return self.checkpoint_state()

    def checkpoint_meta(self, name: str = "") -> dict[str, Any]:
        return {**super().checkpoint_meta(name), "method_cfg": {k: v for k, v in self.method_cfg.items()},
                "precision": self.precision}

    def load_state(self, name: str, checkpoint: dict, path: str) -> None:
        """Copy the checkpoint's learnable tensors into the model (:func:`trainers.class_params.fit_state`: same
        trainer and backbone, class-specific rows mapped by class name, any other mismatch one error saying why)."""
        own = dict(self.learnable_named_parameters())
        state = fit_state(checkpoint, path, own, self.checkpoint_meta(name), self.cfg_node, self.model)
        with torch.no_grad():
            for k, p in own.items():
                p.copy_(state[k].to(p.dtype))
