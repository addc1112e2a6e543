"""ProGrad (docs/method_notes.md#prograd): CoOp prompts updated only along directions that do not conflict with the
zero-shot teacher's.

The teacher is frozen zero-shot CLIP with ProGrad's own templates (:data:`PROGRAD_TEMPLATES`), ``z0 = s·f T0ᵀ``,
where f are the student's image features (the image tower is the same frozen one, so no second pass) and T0 is
computed once per class set. ``L_kl = mean_i Σ_j −softmax(z0_i/T)_j log softmax(z_i/T)_j · T²`` gives the direction
``g_kl``; the primary loss (CE, plus the ``--calib`` terms by default) gives ``g``. Per parameter tensor, where
``g·g_kl < 0``, ``λ`` times the component of g along ``g_kl`` is removed (:func:`project_conflicting`); L_kl itself
is never added. ``TRAINER.PROGRAD.PROJECTION False`` is the TCPT repository's KD-only variant: plain
``CE + L_kl`` (docs/method_notes.md#prograd). T = ``LOSS.T``, λ = ``LOSS.LAMBDA``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError
from dassl.engine import TRAINER_REGISTRY

from .base import PromptModel, PromptOutput, PromptTrainer
from .coop import init_context
from .kgcoop import own_frozen_target
from .prompts import TextPrompts, init_phrase
from .templates import dataset_template, zeroshot_text_features

#: ProGrad's templates: the single-template table except these five.
PROGRAD_TEMPLATES = {
    "OxfordPets": "a type of pet, a photo of a {}.",
    "OxfordFlowers": "a type of flower, a photo of a {}.",
    "FGVCAircraft": "a type of aircraft, a photo of a {}.",
    "DescribableTextures": "a texture of {}.",
    "Food101": "a type of food, a photo of {}.",
}
#: CTX_INIT values meaning "the dataset's ProGrad template" (the official yamls say True).
TEMPLATE_INIT = ("template", "true")


def prograd_template(dataset_name: str) -> str:
    return PROGRAD_TEMPLATES.get(dataset_name, dataset_template(dataset_name))


def soft_cross_entropy(logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """``mean_i Σ_j −softmax(z0_i/T)_j · log softmax(z_i/T)_j · T²`` in fp32 (KL(p0‖p) up to a constant)."""
    p0 = F.softmax(teacher_logits.detach().float() / T, dim=-1)
    return -(p0 * F.log_softmax(logits.float() / T, dim=-1)).sum(-1).mean() * T * T


def project_conflicting(g: torch.Tensor | None, g_kl: torch.Tensor | None, lam: float = 1.0) -> torch.Tensor | None:
    """ProGrad's rule for one parameter tensor: ``g − λ·⟨g, ĝ_kl⟩·ĝ_kl`` when ``⟨g, ĝ_kl⟩ < 0``, else g unchanged.

    ``ĝ_kl = g_kl / ‖g_kl‖`` over the whole flattened tensor; a zero (or missing) ``g_kl`` leaves g unchanged. Dot
    products in fp32; the result has g's dtype. No host sync.
    """
    if g is None or g_kl is None:
        return g
    gf, kf = g.float(), g_kl.float()
    norm = kf.norm()
    unit = torch.where(norm > 0, kf / norm.clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(kf))
    dot = (gf * unit).sum()
    coef = torch.where(dot < 0, lam * dot, torch.zeros_like(dot))
    return (gf - coef * unit).to(g.dtype)


def template_init(node, dataset_name: str) -> str:
    """The init phrase: the dataset's ProGrad template without " {}." for CTX_INIT "template"/"True", else the
    phrase given ("" = random init)."""
    value = node.CTX_INIT
    if value is True or str(value).strip().lower() in TEMPLATE_INIT:
        template = prograd_template(dataset_name)
        phrase = template.replace(" {}.", "")
        if "{}" in phrase:
            raise UserError(f"the ProGrad template {template!r} of {dataset_name} does not end in ' {{}}.'; "
                            "set TRAINER.PROGRAD.CTX_INIT to a phrase")
        return phrase
    return init_phrase(value)


class ProGradModel(PromptModel):
    def __init__(self, cfg, classnames, clip_model, zs_text_features):
        super().__init__(cfg, classnames, clip_model, zs_text_features)
        node = cfg.TRAINER.PROGRAD
        n_ctx, width = int(node.N_CTX), self.text_encoder.width
        phrase = template_init(node, cfg.DATASET.NAME)
        if phrase:
            # The phrase's first k (= words) tokens fill the last k context rows, the leading rows are zeros; a
            # longer BPE tail (commas) stays as fixed text after the context (ProGrad's construction).
            k = len(phrase.split())
            if k > n_ctx:
                raise UserError(f"the ProGrad init phrase {phrase!r} has {k} words but TRAINER.PROGRAD.N_CTX is "
                                f"{n_ctx}; raise N_CTX to at least {k}")
            self.prompts = TextPrompts(self.text_encoder, classnames, n_ctx,
                                       init=" ".join(["X"] * (n_ctx - k) + [phrase]))
            ctx = self.prompts.init_vectors.float().clone()
            ctx[:n_ctx - k] = 0
            self.ctx = nn.Parameter(ctx)
        else:
            self.prompts = TextPrompts(self.text_encoder, classnames, n_ctx)
            self.ctx = init_context(self.prompts, (len(classnames), n_ctx, width) if node.CSC else (n_ctx, width))
        zeros = n_ctx - len(phrase.split()) if phrase else 0
        print(f'Initial context: {zeros} zero vectors + "{phrase}"' if phrase else "Initial context: random",
              f"; number of context words: {n_ctx}", sep="")
        self.temperature = float(cfg.LOSS.T)
        template = prograd_template(cfg.DATASET.NAME)
        self.register_buffer("teacher_text_features", zeroshot_text_features(clip_model, classnames, [template]),
                             persistent=False)

    def encode_text(self) -> torch.Tensor:
        return self.encode_prompts(self.prompts.assemble(self.ctx), self.prompts.eot_idx)

    #: CSC True: one context per training class (issue 24); the reference has no context for any other class
    unseen_classes_reason = ("With CSC True the method learns one context per training class, and its reference "
                             "cannot evaluate classes it was not trained on; train with CSC False to evaluate on new "
                             "classes")

    def class_specific(self) -> dict[str, str]:
        return {"ctx": "refuse"} if self.ctx.dim() == 3 else {}

    def forward(self, image=None, label=None, *, prepared=None, image_features=None) -> PromptOutput:
        out = super().forward(image, label, prepared=prepared, image_features=image_features)
        if self.training:  # the teacher only shapes the update; nothing at test time
            with torch.no_grad():
                z0 = self.logit_scale * out.image_features.detach().float() @ self.teacher_text_features.t()
            out.losses["kl"] = soft_cross_entropy(out.logits, z0, self.temperature)
        return out


@TRAINER_REGISTRY.register()
class ProGrad(PromptTrainer):
    """The shared step; only the update differs (:meth:`backward_and_update`)."""

    model_class = ProGradModel
    cfg_node = "PROGRAD"
    sweep_config = "vit_b16_c16_ep100_batch32"  # the config tools/sweep.py runs (the paper's base-to-novel one)
    cfg_defaults = {"N_CTX": 16, "CSC": False, "CTX_INIT": "", "PREC": "fp16", "PROJECTION": True,
                    "CALIB_AFTER_PROJECTION": False, "FROZEN_TARGET": "dataset"}

    def frozen_target_templates(self) -> list[str]:
        """``FROZEN_TARGET own``: F0 = the teacher's ProGrad templates (the TCPT code's ProGrad)."""
        if own_frozen_target(self.cfg, self.cfg_node):
            return [prograd_template(self.cfg.DATASET.NAME)]
        return super().frozen_target_templates()

    def backward_and_update(self, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        """With PROJECTION: g from the primary terms, projected against g_kl; the calibration terms join the
        primary loss (default) or, with CALIB_AFTER_PROJECTION, add their gradient after the projection.
        Without: the plain sum ``loss`` (CE + L_kl + calib), the TCPT variant."""
        node = self.method_cfg
        if not node.PROJECTION:
            return super().backward_and_update(loss, terms)
        # "ce" stays primary even when a calibration objective replaced it (zs_norm): it is the task loss;
        # a zero-weighted term is a constant and contributes no gradient
        after = ([k for k in terms if k not in ("ce", "kl") and terms[k].requires_grad]
                 if node.CALIB_AFTER_PROJECTION else [])
        primary = sum(v.float() for k, v in terms.items() if k != "kl" and k not in after)
        params = self.learnable_parameters()
        scale = self.scaler.scale if self.scaler is not None else (lambda x: x)
        self.optim.zero_grad(set_to_none=True)
        g_kl = torch.autograd.grad(scale(terms["kl"]), params, retain_graph=True, allow_unused=True)
        g = torch.autograd.grad(scale(primary), params, retain_graph=bool(after), allow_unused=True)
        g_after = (torch.autograd.grad(scale(sum(terms[k].float() for k in after)), params, allow_unused=True)
                   if after else [None] * len(params))
        lam = float(self.cfg.LOSS.LAMBDA)
        for p, gp, gk, ga in zip(params, g, g_kl, g_after):
            grad = project_conflicting(gp, gk, lam)
            if ga is not None:
                grad = ga if grad is None else grad + ga
            p.grad = grad
        if self.scaler is not None:
            self.scaler.step(self.optim)
            self.scaler.update()
        else:
            self.optim.step()
