"""ProDA (docs/method_notes.md#proda, the DAC repository's implementation): a distribution over K generic prompts.

K learnable contexts with mixed class-token positions (the first K/4 ``front``, the next K/4 ``middle``, the rest
``end``). Each step uses K_b of them (a fresh random permutation every ⌈K/K_b⌉ steps), treats each class's K_b text
features as a Gaussian sample and minimises the closed-form upper bound of the expected CE
(:func:`upper_bound_logits`) instead of CE, plus ``α·L_m``, the mean absolute cosine between the K class-free
prompt features (:func:`mean_abs_offdiag_cosine`). At test time the classifier is the mean prompt feature μ_c over
all K prompts (not re-normalised), logits ``s·⟨f, μ_c⟩``.

The output's ``logits`` are the deployable ``s·⟨f, μ_c⟩`` also in training, so ``--calib`` acts on the logits that
are deployed (``TRAINER.PRODA.CALIB_LOGITS surrogate`` gives it the upper-bound logits instead); its
``text_features`` are normalize(μ) of the sampled prompts.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

import clip
from common.errors import UserError
from dassl.engine import TRAINER_REGISTRY

from .base import PromptModel, PromptOutput, PromptTrainer
from .prompts import TextPrompts

CALIB_LOGITS = ("deployable", "surrogate")


class ProDAClassifier(NamedTuple):
    """The test-time classifier, computed once per evaluation."""

    mean: torch.Tensor           # C×E, mean of the K normalised prompt features per class (not re-normalised)
    text_features: torch.Tensor  # normalize(mean): what the run record stores


def prompt_positions(n_prompt: int) -> list[str]:
    """Class-token position of each prompt: K/4 ``front``, K/4 ``middle``, the rest ``end`` (K = 1: ``end``)."""
    q = n_prompt // 4
    return ["front"] * q + ["middle"] * q + ["end"] * (n_prompt - 2 * q)


def mean_abs_offdiag_cosine(u: torch.Tensor) -> torch.Tensor:
    """``mean_{k≠k'} |⟨u_k, u_k'⟩|`` over the K(K−1) ordered pairs of normalised rows, fp32; 0 for one row."""
    k = u.shape[0]
    if k < 2:
        return u.new_zeros((), dtype=torch.float32)
    gram = (u.float() @ u.float().t()).abs()
    return (gram.sum() - gram.diagonal().sum()) / (k * (k - 1))


def upper_bound_logits(logits: torch.Tensor, text: torch.Tensor, image_features: torch.Tensor,
                       labels: torch.Tensor, scale) -> torch.Tensor:
    """``z̃_j = z_j + ½ s² σ_j`` with ``σ_j = R_yy + R_jj − 2R_yj`` (fp32), so that ``CE(z̃, y)`` bounds E_t[CE].

    ``text`` is C×P×E (P normalised prompt features per class), ``R_{cc'}(f) = Σ_d f_d² Σ^{(d)}_{cc'}`` with the
    per-dimension class×class covariance ``Σ^{(d)} = Σ_k δ_{c,k,d} δ_{c',k,d} / (P+1)``, ``δ = t − mean_k t``. Only
    the B×C entries of R that σ needs are formed.
    """
    t = text.float()
    P = t.shape[1]
    delta = t - t.mean(dim=1, keepdim=True)                    # C×P×E
    f2 = image_features.detach().float().pow(2)                 # B×E
    r_jj = f2 @ delta.pow(2).sum(dim=1).t() / (P + 1)           # B×C
    d_y = delta[labels.long()]                                   # B×P×E
    r_yj = (f2.unsqueeze(1) * d_y).flatten(1) @ delta.flatten(1).t() / (P + 1)  # B×C
    r_yy = r_yj.gather(1, labels.long().view(-1, 1))
    sigma = r_yy + r_jj - 2 * r_yj
    s = torch.as_tensor(scale, dtype=torch.float32, device=t.device)
    return logits.float() + 0.5 * s * s * sigma


def use_raw_classnames(prompts: TextPrompts, text_encoder, classnames: list[str]) -> None:
    """The reference's tokenisation (docs/method_notes.md#proda, ``RAW_CLASSNAMES``): prompt tokens from the raw names
    (``_`` kept) while the ``middle``/``front`` class-token counts stay those of the cleaned names."""
    placeholder = " ".join(["X"] * prompts.n_ctx)
    ids = clip.tokenize([f"{placeholder} {name}." for name in classnames]).to(prompts.ids.device)
    with torch.no_grad():
        emb = text_encoder.embed(ids)
    prompts.ids = ids
    prompts.token_prefix = emb[:, :1].clone()
    prompts.token_suffix = emb[:, 1 + prompts.n_ctx:].clone()
    prompts.eot_idx = ids.argmax(dim=-1)


class ProDAModel(PromptModel):
    def __init__(self, cfg, classnames, clip_model, zs_text_features):
        super().__init__(cfg, classnames, clip_model, zs_text_features)
        node = cfg.TRAINER.PRODA
        self.n_prompt, self.prompt_bs, n_ctx = int(node.N_PROMPT), int(node.PROMPT_BS), int(node.N_CTX)
        if not 1 <= self.prompt_bs <= self.n_prompt:
            raise UserError(f"TRAINER.PRODA.PROMPT_BS = {self.prompt_bs} must be between 1 and N_PROMPT = "
                            f"{self.n_prompt}")
        self.calib_logits = str(node.CALIB_LOGITS).lower()
        if self.calib_logits not in CALIB_LOGITS:
            raise UserError(f"TRAINER.PRODA.CALIB_LOGITS = {node.CALIB_LOGITS!r} is not one of "
                            f"{', '.join(CALIB_LOGITS)}")
        self.alpha = float(node.ALPHA)
        self.positions = prompt_positions(self.n_prompt)
        self.prompts = TextPrompts(self.text_encoder, classnames, n_ctx)
        if node.RAW_CLASSNAMES:
            use_raw_classnames(self.prompts, self.text_encoder, list(classnames))
        self.nc_prompts = TextPrompts(self.text_encoder, [""], n_ctx)  # "[SOS][ctx][.][EOT]" for L_m
        print(f"{self.n_prompt} prompts of {n_ctx} random context vectors ({self.positions.count('front')} front, "
              f"{self.positions.count('middle')} middle, {self.positions.count('end')} end); "
              f"{self.prompt_bs} per step")
        self.ctx = nn.Parameter(torch.empty(self.n_prompt, n_ctx, self.text_encoder.width).normal_(std=0.02))
        self._step, self._perm = 0, None

    def next_prompt_batch(self) -> torch.Tensor:
        """Indices of this step's K_b prompts: consecutive slices of a permutation redrawn every ⌈K/K_b⌉ steps."""
        cycle = math.ceil(self.n_prompt / self.prompt_bs)
        r = self._step % cycle
        if r == 0:
            self._perm = torch.randperm(self.n_prompt)
        self._step += 1
        return self._perm[r * self.prompt_bs:(r + 1) * self.prompt_bs]

    def class_prompt_features(self, idx: list[int]) -> torch.Tensor:
        """Normalised features C×P×E of the prompts ``idx`` for every class."""
        prompts = torch.stack([self.prompts.assemble(self.ctx[k], position=self.positions[k]) for k in idx])
        eot = self.prompts.eot_idx.repeat(len(idx))
        return self.encode_prompts(prompts.flatten(0, 1), eot).view(len(idx), self.prompts.num_classes, -1) \
            .transpose(0, 1)

    def prepare(self) -> ProDAClassifier:
        """μ_c over all K prompts, one prompt at a time (bounded memory)."""
        mean = sum(self.class_prompt_features([k])[:, 0] for k in range(self.n_prompt)) / self.n_prompt
        return ProDAClassifier(mean, F.normalize(mean, dim=-1))

    def prompt_diversity(self) -> torch.Tensor:
        """L_m over all K class-free prompt features."""
        prompts = self.nc_prompts.assemble_batched(self.ctx)[:, 0]
        u = self.encode_prompts(prompts, self.nc_prompts.eot_idx.expand(self.n_prompt))
        return mean_abs_offdiag_cosine(u)

    def forward(self, image=None, label=None, *, prepared=None, image_features=None) -> PromptOutput:
        f = self.encode_image(image) if image_features is None else image_features.float()
        if not self.training:
            classifier = self.prepare() if prepared is None else prepared
            return PromptOutput(logits=self.logit_scale * f @ classifier.mean.t(),
                                text_features=classifier.text_features, image_features=f)
        if label is None:
            raise ValueError("ProDA's training forward needs the labels (its upper-bound loss depends on them)")
        text = self.class_prompt_features(self.next_prompt_batch().tolist())  # C×K_b×E
        mean = text.mean(dim=1)
        logits = self.logit_scale * f.detach() @ mean.t()
        surrogate = upper_bound_logits(logits, text, f, label, self.logit_scale)
        losses = {"upper": F.cross_entropy(surrogate, label), "div": self.alpha * self.prompt_diversity()}
        return PromptOutput(logits=surrogate if self.calib_logits == "surrogate" else logits,
                            text_features=F.normalize(mean, dim=-1), image_features=f, losses=losses)


@TRAINER_REGISTRY.register()
class ProDA(PromptTrainer):
    model_class = ProDAModel
    cfg_node = "PRODA"
    sweep_config = "vit_b16_c16_ep100_batch4"  # the config tools/sweep.py runs (the paper's base-to-novel one)
    cfg_defaults = {"N_CTX": 16, "N_PROMPT": 32, "PROMPT_BS": 4, "ALPHA": 0.1, "PREC": "fp16",
                    "RAW_CLASSNAMES": False, "CALIB_LOGITS": "deployable"}

    def loss_terms(self, out, label):
        """The upper bound replaces CE; the diversity term is added (both in ``out.losses``)."""
        return dict(out.losses)
