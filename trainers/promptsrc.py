"""PromptSRC (docs/method_notes.md#promptsrc): IVLP prompts regulated by the frozen model, plus Gaussian prompt
aggregation.

Training adds three self-consistency terms to CE, against frozen references:
``scl_text`` (L1 of the tuned class features to ``fixed_embeddings``, the template-mean frozen features),
``scl_image`` (L1 of the prompted image features to the frozen ones ``f0``) and ``scl_logits`` (KL from the
zero-shot logits ``s·f0·fixed_embeddingsᵀ`` to the tuned ones, summed and divided by B·C). GPA replaces the final
prompts by the Gaussian-weighted average of the prompts after each epoch; the epoch-E checkpoint holds it.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

import clip
from common.errors import UserError
from dassl.engine import TRAINER_REGISTRY

from .base import PromptOutput, PromptTrainer
from .ivlp import IVLPModel
from .prompts import clean_classname
from .templates import DEFAULT_TEMPLATE, IMAGENET_TEMPLATES

#: PromptSRC's own template list: "a photo of a {}." then the first 59 other OpenAI ImageNet templates (60).
PROMPTSRC_TEMPLATES: list[str] = [DEFAULT_TEMPLATE] + [t for t in IMAGENET_TEMPLATES if t != DEFAULT_TEMPLATE][:59]
#: ``TRAINER.PROMPTSRC.SCL_TEMPLATES`` -> templates of ``fixed_embeddings`` (80: the TCPT/MaPLe copy).
SCL_TEMPLATE_SETS = {60: PROMPTSRC_TEMPLATES, 80: IMAGENET_TEMPLATES}
GPA_SCOPES = ("learnable", "all")


@torch.no_grad()
def template_mean_features(text_encoder, classnames, templates, chunk: int = 256) -> torch.Tensor:
    """PromptSRC's ``fixed_embeddings``: the mean over templates of the *unnormalised* frozen text features, then
    normalised (C×E, fp32). Unlike CoOp's ensemble rule, templates are not normalised before averaging. The tower
    runs in fp32 (a temporary fp32 copy when CLIP is in low precision), as the reference does."""
    encoder = text_encoder if text_encoder.dtype == torch.float32 else copy.deepcopy(text_encoder).float()
    device = encoder.positional_embedding.device
    names = [clean_classname(c) for c in classnames]
    total = None
    with torch.autocast(device.type, enabled=False):
        for template in templates:
            ids = clip.tokenize([template.format(n) for n in names]).to(device)
            feats = torch.cat([encoder(encoder.embed(ids[i:i + chunk]), ids[i:i + chunk].argmax(-1)).float()
                               for i in range(0, len(ids), chunk)])
            total = feats if total is None else total + feats
    return F.normalize(total / len(templates), dim=-1)


def scl_losses(text: torch.Tensor, fixed: torch.Tensor, image: torch.Tensor, image0: torch.Tensor,
               logits: torch.Tensor, logits0: torch.Tensor, text_weight: float, image_weight: float
               ) -> dict[str, torch.Tensor]:
    """The self-consistency terms (fp32): weighted L1 means over C×E and B×E, and
    ``sum_i KL(softmax(z0_i) || softmax(z_i)) / (B·C)`` (teacher -> student, temperature 1, weight 1)."""
    z, z0 = logits.float(), logits0.float()
    kl = F.kl_div(F.log_softmax(z, dim=1), F.log_softmax(z0, dim=1), reduction="sum", log_target=True)
    return {"scl_text": text_weight * F.l1_loss(text.float(), fixed.float()),
            "scl_image": image_weight * F.l1_loss(image.float(), image0.float()),
            "scl_logits": kl / z.numel()}


def gpa_weights(max_epoch: int, mean: float, std: float) -> list[float]:
    """``w_e = N(e; mean, std) / sum_{e'=1..E} N(e'; mean, std)`` for e = 1..E, computed as a softmax of the
    log-density so epochs far from the mean underflow to 0 instead of the sum."""
    if std <= 0:
        raise UserError(f"TRAINER.PROMPTSRC.GPA_STD must be positive, got {std}")
    logs = [-((e - mean) ** 2) / (2.0 * std * std) for e in range(1, max_epoch + 1)]
    if not logs:  # no epochs (an eval-only run with OPTIM.MAX_EPOCH < 1): nothing to aggregate
        return []
    top = max(logs)
    raw = [math.exp(v - top) for v in logs]
    total = sum(raw)
    return [r / total for r in raw]


class PromptSRCModel(IVLPModel):
    """IVLP with the SCL terms in training mode; inference is plain IVLP."""

    cfg_node = "PROMPTSRC"

    def __init__(self, cfg, classnames, clip_model, zs_text_features):
        super().__init__(cfg, classnames, clip_model, zs_text_features)
        node = cfg.TRAINER.PROMPTSRC
        n_templates = int(node.SCL_TEMPLATES)
        if n_templates not in SCL_TEMPLATE_SETS:
            raise UserError(f"TRAINER.PROMPTSRC.SCL_TEMPLATES must be one of {sorted(SCL_TEMPLATE_SETS)} "
                            f"(PromptSRC's 60-template list or TCPT's 80), got {node.SCL_TEMPLATES!r}")
        self.scl_templates = SCL_TEMPLATE_SETS[n_templates]
        self.text_weight = float(node.TEXT_LOSS_WEIGHT)
        self.image_weight = float(node.IMAGE_LOSS_WEIGHT)
        self._fixed = None  # built at the first training step: evaluation-only runs never need it

    @property
    def fixed_embeddings(self) -> torch.Tensor:
        """Normalised template-mean frozen text features of the current classes, computed once."""
        if self._fixed is None:
            print(f"Computing PromptSRC's fixed_embeddings ({len(self.scl_templates)} templates)")
            self._fixed = template_mean_features(self.text_encoder, self.classnames, self.scl_templates)
        return self._fixed

    def forward(self, image=None, label=None, *, prepared=None, image_features=None) -> PromptOutput:
        out = super().forward(image, label, prepared=prepared, image_features=image_features)
        if not self.training:
            return out
        with torch.no_grad():
            f0 = F.normalize(self.image_encoder(image.to(self.image_encoder.dtype)).float(), dim=-1)
            fixed = self.fixed_embeddings
            z0 = self.logit_scale * f0 @ fixed.t()
        out.losses.update(scl_losses(out.text_features, fixed, out.image_features, f0, out.logits, z0,
                                     self.text_weight, self.image_weight))
        out.zs_image_features = f0
        return out


class PromptAggregator:
    """Running ``sum_e w_e · theta_e`` over a fixed set of tensors; :meth:`load` writes it into them.

    ``learnable`` scope (our default): the learnable prompts, summed in fp32. ``all`` (the reference): every tensor of
    the model's state dict including frozen CLIP, each product and sum in the tensor's own dtype (fp16 rounding noise
    on the frozen weights, which never reach a checkpoint)."""

    def __init__(self, tensors: dict[str, torch.Tensor], fp32: bool):
        self.tensors, self.fp32 = tensors, fp32
        self.sum: dict[str, torch.Tensor] | None = None

    def add(self, weight: float) -> None:
        if weight == 0.0:  # no contribution (and no 0·inf)
            return
        with torch.no_grad():
            terms = {k: (t.detach().float() if self.fp32 else t.detach()) * weight for k, t in self.tensors.items()}
            self.sum = terms if self.sum is None else {k: self.sum[k] + v for k, v in terms.items()}

    def load(self) -> None:
        with torch.no_grad():
            for k, t in self.tensors.items():
                t.copy_(self.sum[k].to(t.dtype))

    def state(self) -> dict[str, torch.Tensor] | None:
        return None if self.sum is None else {k: v.cpu() for k, v in self.sum.items()}

    def restore(self, state: dict[str, torch.Tensor] | None) -> None:
        self.sum = None if state is None else {k: v.to(self.tensors[k].device) for k, v in state.items()}


@TRAINER_REGISTRY.register()
class PromptSRC(PromptTrainer):
    model_class = PromptSRCModel
    cfg_node = "PROMPTSRC"
    sweep_config = "vit_b16_c2_ep20_batch4_4+4ctx"  # the config tools/sweep.py runs (the paper's base-to-novel one)
    # one config per protocol (few-shot GPA per dataset: tools/sweep.py FEW_SHOT_DATASET_OPTS)
    sweep_cross_dataset_config = "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets"
    sweep_few_shot_config = "vit_b16_c2_ep50_batch4_4+4ctx_few_shot"
    registered_name = "VLPromptLearner"
    cfg_defaults = {"N_CTX_VISION": 4, "N_CTX_TEXT": 4, "CTX_INIT": "a picture of a", "PREC": "fp16",
                    "PROMPT_DEPTH_VISION": 9, "PROMPT_DEPTH_TEXT": 9, "TEXT_LOSS_WEIGHT": 25,
                    "IMAGE_LOSS_WEIGHT": 10, "GPA_MEAN": 15, "GPA_STD": 1,
                    "SCL_TEMPLATES": 60, "GPA_SCOPE": "learnable"}

    def build_model(self):
        super().build_model()
        node = self.method_cfg
        scope = str(node.GPA_SCOPE)
        if scope not in GPA_SCOPES:
            raise UserError(f"TRAINER.PROMPTSRC.GPA_SCOPE must be one of {GPA_SCOPES}, got {scope!r}")
        self.gpa_weights = gpa_weights(self.max_epoch, float(node.GPA_MEAN), float(node.GPA_STD))
        if scope == "learnable":
            tensors = dict(self.learnable_named_parameters())
        else:  # every distinct floating tensor of the state dict (the towers are shared by reference)
            tensors, seen = {}, set()
            for k, t in self.model.state_dict(keep_vars=True).items():
                if t.is_floating_point() and id(t) not in seen:
                    seen.add(id(t))
                    tensors[k] = t
        self.gpa = PromptAggregator(tensors, fp32=scope == "learnable")

    def after_epoch(self):
        """GPA after the epoch's last optimiser step and before its checkpoint
        (docs/engine_api.md#when-testing-happens): accumulate, and at the last epoch swap the aggregate in, so the
        epoch-E checkpoint and the final test use it."""
        self.gpa.add(self.gpa_weights[self.epoch])
        if self.epoch + 1 == self.max_epoch:
            self.gpa.load()
            print(f"Gaussian prompt aggregation: weights {[round(w, 4) for w in self.gpa_weights]} "
                  f"(GPA_MEAN {self.method_cfg.GPA_MEAN}, GPA_STD {self.method_cfg.GPA_STD}) loaded")
        super().after_epoch()

    # The running aggregate of an unfinished run goes into the engine's checkpoint (``extra``), so a resumed run
    # aggregates every epoch; the parameters in the checkpoint stay the learnable ones.
    def checkpoint_extra(self, epoch: int) -> dict:
        return {"gpa_sum": self.gpa.state()} if epoch + 1 < self.max_epoch else {}

    def after_resume(self, checkpoint: dict, start_epoch: int) -> None:
        if 0 < start_epoch < self.max_epoch:
            extra = checkpoint.get("extra") or {}
            if "gpa_sum" not in extra:
                raise UserError(f"resuming PromptSRC at epoch {start_epoch} needs the running prompt average, which "
                                "its checkpoint does not hold (saved by older code); delete the output folder to "
                                "train from scratch")
            self.gpa.restore(extra["gpa_sum"])
