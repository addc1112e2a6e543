"""Train-time calibration objectives selected by ``--calib NAME`` (docs/method_notes.md, "Calibration";
docs/architecture.md §3).

- ``tcpt`` (the paper): ``lambda_margin * L_margin + lambda_mom * L_mom``, added to the method's loss;
- ``mbls``: margin-based label smoothing penalty, added to the method's CE;
- ``zs_norm``: CE on logits min-max mapped into the zero-shot range, *replacing* the method's CE;
- ``penalty``: ZS-range penalty, added to the method's CE.

Every term is computed in fp32 whatever the input dtype: the paper's fp16 forward underflows the covariance
term to 0 (docs/method_notes.md#tcpt-objective) and the margin variance around x100-scaled logits is
precision-sensitive. Nothing is detached except the zero-shot logits, which are a constant target (computed under
no_grad anyway).

Config keys (``cfg.TRAINER.CALIB``; defaults = the official code, see :data:`CALIB_DEFAULTS`):
NAME ("" = off), ALPHA, BETA, LAMBDA_MARGIN, LAMBDA_MOM, MBLS_ALPHA, MBLS_MARGIN, PENALTY_WEIGHT,
INSTANCE_T ("mean": T = batch mean of B x C x E instance-conditional text features, renormalised; "last": the
last image's, as the official CoCoOp code), MARGIN_LOGITS ("scaled": z as the official code; "cosine": z / s),
FROZEN_TEMPLATES ("single": the dataset's hand-written template; "ensemble": the 80 ImageNet templates) and
FROZEN_TARGET_PREC ("model": F0 in the run's precision; "fp16": always fp16, as the paper's zero-shot CLIP; "fp32") -
read by the trainer when it builds ``F0``, not here.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from common.errors import UserError
from common.suggest import unknown_name_message

__all__ = [
    "margin_mean_var", "text_moment_matching", "mbls_penalty", "mbls_loss", "zs_norm_logits", "penalty_loss",
    "CalibObjective", "TCPTObjective", "MBLSObjective", "ZSNormObjective", "PenaltyObjective",
    "CALIB_NAMES", "DEFAULT_CALIB", "CALIB_ALIASES", "CALIB_WORDS", "CALIB_DEFAULTS", "resolve_calib_name",
    "add_calib_config", "build_objective",
]


# ------------------------------------------------------------------------------------------------- the terms
def margin_mean_var(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.1,
                    beta: float = 0.01) -> torch.Tensor:
    """``L_margin = -alpha * mean_i(m_i) + beta * mean_i((m_i - mean(m))^2)``, ``m_i = z_{i,y_i} - max_{j!=y_i} z_ij``.

    Population variance (divisor B), so a batch of one has variance exactly 0. Minimising it widens the mean
    margin (gradient -alpha/B on the true logit, +alpha/B on the runner-up) and narrows its spread.
    """
    z = logits.float()
    if z.dim() != 2 or z.shape[1] < 2:
        raise ValueError(f"margin_mean_var needs B x C logits with C >= 2, got shape {tuple(z.shape)}")
    y = labels.long().view(-1, 1)
    true = z.gather(1, y).squeeze(1)
    others = z.scatter(1, y, float("-inf"))
    m = true - others.max(dim=1).values
    mean = m.mean()
    var = (m - mean).pow(2).mean()
    return -alpha * mean + beta * var


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu = x.mean(dim=0)
    xc = x - mu
    return mu, xc.t() @ xc / x.shape[0]


def text_moment_matching(tuned: torch.Tensor, frozen: torch.Tensor) -> torch.Tensor:
    """``L_mom = ||mu_T - mu_F0||_2^2 + ||Sigma_T - Sigma_F0||_F^2`` over the C class prototypes (rows).

    ``Sigma = (X - mu)^T (X - mu) / C`` (D x D, divisor C); norms are sums of squares. Zero when tuned == frozen.
    """
    t, f = tuned.float(), frozen.float()
    if t.dim() != 2 or t.shape != f.shape:
        raise ValueError(f"text_moment_matching needs two C x D tensors of the same shape, got "
                         f"{tuple(t.shape)} and {tuple(f.shape)}")
    mu_t, cov_t = _moments(t)
    mu_f, cov_f = _moments(f)
    return (mu_t - mu_f).pow(2).sum() + (cov_t - cov_f).pow(2).sum()


def mbls_penalty(logits: torch.Tensor, margin: float = 10.0) -> torch.Tensor:
    """``mean_{i,j} relu(max_k z_ik - z_ij - margin)`` (the MbLS inequality penalty, unweighted)."""
    z = logits.float()
    gap = z.max(dim=1, keepdim=True).values - z
    return F.relu(gap - margin).mean()


def mbls_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.1,
              margin: float = 10.0) -> torch.Tensor:
    """The whole MbLS loss ``CE(z, y) + alpha * mbls_penalty(z, margin)``."""
    return F.cross_entropy(logits.float(), labels.long()) + alpha * mbls_penalty(logits, margin)


def zs_norm_logits(logits: torch.Tensor, zs_logits: torch.Tensor) -> torch.Tensor:
    """Per sample, min-max map z into the zero-shot range:
    ``(z - min z) / (max z - min z) * (max z_zs - min z_zs) + min z_zs``.

    A row with max z = min z (all equal) maps to ``min z_zs`` everywhere instead of 0/0.
    """
    z, zs = logits.float(), zs_logits.detach().float()
    if z.shape != zs.shape:
        raise ValueError(f"logits {tuple(z.shape)} and zs_logits {tuple(zs.shape)} must have the same shape")
    z_min = z.min(dim=1, keepdim=True).values
    z_rng = z.max(dim=1, keepdim=True).values - z_min
    zs_min = zs.min(dim=1, keepdim=True).values
    zs_rng = zs.max(dim=1, keepdim=True).values - zs_min
    z_rng = torch.where(z_rng > 0, z_rng, torch.ones_like(z_rng))
    return (z - z_min) / z_rng * zs_rng + zs_min


def penalty_loss(logits: torch.Tensor, zs_logits: torch.Tensor, weight: float = 10.0) -> torch.Tensor:
    """``weight * [mean_{i,j} relu(z_ij - max_j zs_ij) + mean_{i,j} relu(min_j zs_ij - z_ij)]`` (no CE)."""
    z, zs = logits.float(), zs_logits.detach().float()
    if z.shape != zs.shape:
        raise ValueError(f"logits {tuple(z.shape)} and zs_logits {tuple(zs.shape)} must have the same shape")
    upper = F.relu(z - zs.max(dim=1, keepdim=True).values).mean()
    lower = F.relu(zs.min(dim=1, keepdim=True).values - z).mean()
    return weight * (upper + lower)


# ------------------------------------------------------------------------------------------------ objectives
def _zero(like: torch.Tensor) -> torch.Tensor:
    return torch.zeros((), dtype=torch.float32, device=like.device)


class CalibObjective:
    """Base class: ``__call__`` returns weighted fp32 loss terms; a term named ``"ce"`` replaces the method's CE.

    A term whose weight is 0 is returned as an exact 0 (not computed), so with every weight at 0 the total equals
    the method's own loss bit for bit.
    """

    name: str = ""
    needs_zs_logits: bool = False

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, text_features: torch.Tensor | None,
                 zs_text_features: torch.Tensor | None, zs_logits: torch.Tensor | None = None,
                 logit_scale: Any = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _require_zs(self, zs_logits):
        if zs_logits is None:
            raise ValueError(f"calibration objective {self.name!r} needs zs_logits (needs_zs_logits=True); "
                             "the trainer must pass the zero-shot logits of the batch")

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


class TCPTObjective(CalibObjective):
    """The paper's terms: ``{"margin": lambda_margin * L_margin, "mom": lambda_mom * L_mom}``."""

    name = "tcpt"

    def __init__(self, alpha: float = 0.1, beta: float = 0.01, lambda_margin: float = 1.0,
                 lambda_mom: float = 5.0, instance_t: str = "mean", margin_logits: str = "scaled"):
        self.alpha, self.beta = float(alpha), float(beta)
        self.lambda_margin, self.lambda_mom = float(lambda_margin), float(lambda_mom)
        self.instance_t, self.margin_logits = instance_t, margin_logits

    def class_features(self, text_features: torch.Tensor) -> torch.Tensor:
        """T (C x E) from C x E features, or from B x C x E instance-conditional ones (INSTANCE_T)."""
        t = text_features.float()
        if t.dim() == 2:
            return t
        if t.dim() != 3:
            raise ValueError(f"text_features must be C x E or B x C x E, got shape {tuple(t.shape)}")
        if self.instance_t == "last":
            return t[-1]
        return F.normalize(t.mean(dim=0), dim=-1)

    def __call__(self, logits, labels, text_features, zs_text_features, zs_logits=None, logit_scale=None):
        terms = {}
        if self.lambda_margin == 0 or (self.alpha == 0 and self.beta == 0):
            terms["margin"] = _zero(logits)
        else:
            z = logits.float()
            if self.margin_logits == "cosine":
                if logit_scale is None:
                    raise ValueError("TRAINER.CALIB.MARGIN_LOGITS='cosine' needs logit_scale (s) in the call")
                z = z / torch.as_tensor(logit_scale, dtype=torch.float32, device=z.device)
            terms["margin"] = self.lambda_margin * margin_mean_var(z, labels, self.alpha, self.beta)
        if self.lambda_mom == 0:
            terms["mom"] = _zero(logits)
        else:
            if text_features is None or zs_text_features is None:
                raise ValueError("the tcpt moment term needs text_features and zs_text_features; a method with no "
                                 "text features must set TRAINER.CALIB.LAMBDA_MOM 0")
            terms["mom"] = self.lambda_mom * text_moment_matching(self.class_features(text_features),
                                                                  zs_text_features)
        return terms


class MBLSObjective(CalibObjective):
    """``{"mbls": alpha * mbls_penalty(z, margin)}``; the method's CE stays."""

    name = "mbls"

    def __init__(self, alpha: float = 0.1, margin: float = 10.0):
        self.alpha, self.margin = float(alpha), float(margin)

    def __call__(self, logits, labels, text_features, zs_text_features, zs_logits=None, logit_scale=None):
        if self.alpha == 0:
            return {"mbls": _zero(logits)}
        return {"mbls": self.alpha * mbls_penalty(logits, self.margin)}


class ZSNormObjective(CalibObjective):
    """``{"ce": CE(zs_norm_logits(z, z_zs), y)}``, which replaces the method's CE (test logits stay raw)."""

    name = "zs_norm"
    needs_zs_logits = True

    def __call__(self, logits, labels, text_features, zs_text_features, zs_logits=None, logit_scale=None):
        self._require_zs(zs_logits)
        return {"ce": F.cross_entropy(zs_norm_logits(logits, zs_logits), labels.long())}


class PenaltyObjective(CalibObjective):
    """``{"penalty": penalty_loss(z, z_zs, weight)}``; the method's CE stays."""

    name = "penalty"
    needs_zs_logits = True

    def __init__(self, weight: float = 10.0):
        self.weight = float(weight)

    def __call__(self, logits, labels, text_features, zs_text_features, zs_logits=None, logit_scale=None):
        if self.weight == 0:
            return {"penalty": _zero(logits)}
        self._require_zs(zs_logits)
        return {"penalty": penalty_loss(logits, zs_logits, self.weight)}


# -------------------------------------------------------------------------------------------------- registry
# The one owner of the calibration names: train.py (``--calib``) and the sweep (``CALIB=``) import these.
CALIB_NAMES = ("tcpt", "mbls", "zs_norm", "penalty")
#: the objective a bare ``--calib`` (and a sweep's ``CALIB=on``) selects: the paper's
DEFAULT_CALIB = "tcpt"
#: other spellings -> canonical name ("" = no objective)
CALIB_ALIASES = {"paper": DEFAULT_CALIB, "none": "", "off": "", "zsnorm": "zs_norm", "zs-norm": "zs_norm"}
#: a sweep's ``CALIB`` words -> the variants they run (None = without --calib); any other word is an objective name
#: or alias (:func:`resolve_calib_name`)
CALIB_WORDS: dict[str, tuple[str | None, ...]] = {
    "both": (None, DEFAULT_CALIB), "on": (DEFAULT_CALIB,), "off": (None,), "none": (None,),
    DEFAULT_CALIB: (DEFAULT_CALIB,), "paper": (DEFAULT_CALIB,),
}

# Defaults of cfg.TRAINER.CALIB: the official code's literals (docs/method_notes.md, "TCPT objective" and
# "Train-time baselines").
CALIB_DEFAULTS: dict[str, Any] = {
    "NAME": "",
    "ALPHA": 0.1,
    "BETA": 0.01,
    "LAMBDA_MARGIN": 1.0,
    "LAMBDA_MOM": 5.0,
    "MBLS_ALPHA": 0.1,
    "MBLS_MARGIN": 10.0,
    "PENALTY_WEIGHT": 10.0,
    "INSTANCE_T": "mean",
    "MARGIN_LOGITS": "scaled",
    "FROZEN_TEMPLATES": "single",
    "FROZEN_TARGET_PREC": "model",
}
_CHOICES = {"INSTANCE_T": ("mean", "last"), "MARGIN_LOGITS": ("scaled", "cosine"),
            "FROZEN_TEMPLATES": ("single", "ensemble"), "FROZEN_TARGET_PREC": ("model", "fp16", "fp32")}


def resolve_calib_name(name: str | None) -> str:
    """Canonical objective name, case-insensitive: ``"tcpt"``/``"paper"`` -> ``"tcpt"``; ``""``/``None``/
    ``"none"``/``"off"`` -> ``""`` (no objective: TRAINER.CALIB.NAME's default, which ``train.py`` resolves on
    every run; the bare ``--calib`` flag is turned into ``"tcpt"`` by train.py); ``"zs-norm"``/``"zsnorm"`` ->
    ``"zs_norm"``. Unknown names raise UserError listing the names and the closest match."""
    key = (name or "").strip().lower()
    key = CALIB_ALIASES.get(key, key)
    if key == "" or key in CALIB_NAMES:
        return key
    raise UserError(unknown_name_message("calibration objective", name, CALIB_NAMES,
                                         "--calib / TRAINER.CALIB.NAME", sort=False))


def add_calib_config(cfg) -> None:
    """Create ``cfg.TRAINER.CALIB`` with :data:`CALIB_DEFAULTS` (keys already present are kept)."""
    from yacs.config import CfgNode as CN

    if "TRAINER" not in cfg:
        cfg.TRAINER = CN()
    if "CALIB" not in cfg.TRAINER:
        cfg.TRAINER.CALIB = CN()
    for key, value in CALIB_DEFAULTS.items():
        if key not in cfg.TRAINER.CALIB:
            cfg.TRAINER.CALIB[key] = value


def build_objective(cfg) -> CalibObjective | None:
    """The objective named by ``cfg.TRAINER.CALIB.NAME`` (None when it is "" / "none" or the node is absent)."""
    node = cfg.TRAINER.get("CALIB") if "TRAINER" in cfg else None
    if node is None:
        return None
    c = {key: node.get(key, default) for key, default in CALIB_DEFAULTS.items()}
    name = resolve_calib_name(c["NAME"])
    if name == "":
        return None
    for key, choices in _CHOICES.items():
        if str(c[key]).lower() not in choices:
            raise UserError(f"TRAINER.CALIB.{key} = {c[key]!r} is not one of {', '.join(choices)}; "
                            f"set it in the config or with the opts 'TRAINER.CALIB.{key} {choices[0]}'")
    if name == "tcpt":
        return TCPTObjective(c["ALPHA"], c["BETA"], c["LAMBDA_MARGIN"], c["LAMBDA_MOM"],
                             str(c["INSTANCE_T"]).lower(), str(c["MARGIN_LOGITS"]).lower())
    if name == "mbls":
        return MBLSObjective(c["MBLS_ALPHA"], c["MBLS_MARGIN"])
    if name == "zs_norm":
        return ZSNormObjective()
    return PenaltyObjective(c["PENALTY_WEIGHT"])
