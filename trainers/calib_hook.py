"""``--calib`` for a trainer that is not a ``PromptTrainer``: a ported CoOp-family ``TrainerX`` file
(docs/method_notes.md).

Three changes to such a file (docs/adding_a_method.md, "Porting a CoOp-family trainer"):

    class MyTrainer(CalibHook, TrainerX):                      # 1. mix the hook in
        def build_model(self):
            ...
            self.setup_calib(clip_model)                       # 2. once CLIP is loaded (it stays frozen)
        def forward_backward(self, batch):
            ...
            logits, text_features = ...       # text_features: the tuned class features (C×E or B×C×E)
            loss = self.calib_loss({"ce": F.cross_entropy(logits, label)}, logits, label, text_features, image)
                                              # 3. the method's terms plus the --calib terms, summed

``calib_loss`` adds exactly the objective ``PromptTrainer``'s shared step adds (calibration/regularizers.py), against
the same frozen target ``F0`` (the dataset's single template, or TRAINER.CALIB.FROZEN_TEMPLATES ensemble, in
TRAINER.CALIB.FROZEN_TARGET_PREC's precision); without
--calib it is the sum of the method's terms. As in the shared step, a term named ``"ce"`` returned by the objective
(ZS-Norm) replaces the method's ``"ce"``. The hook also puts ``zs_text_features`` and ``logit_scale`` into the run
record.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from calibration.regularizers import build_objective

from .base import apply_text_options
from .templates import FrozenTarget, zeroshot_text_features


class CalibHook(FrozenTarget):
    """Mixin for a Dassl ``TrainerX`` subclass: ``setup_calib(clip_model)`` then ``calib_loss(...)`` in the step.
    F0's templates and precision follow PromptTrainer's rule (:class:`trainers.templates.FrozenTarget`); the
    checkpoints, resume, test loop and run record are the engine's, as for every trainer."""

    supports_calib = True

    def setup_calib(self, clip_model) -> None:
        """Build the --calib objective and the frozen text features ``F0`` of the current classes, once."""
        self.calib_clip = clip_model.to(self.device)  # the parts the method's model does not hold move too
        apply_text_options(clip_model, self.cfg)  # MODEL.TEXT_TRUNCATE_EOT for F0 and the file's encode_text
        self.calib_objective = build_objective(self.cfg)
        with torch.no_grad():
            self.zs_text_features = zeroshot_text_features(
                clip_model, self.dm.dataset.classnames, self.frozen_target_templates(),
                precision=self.frozen_target_precision()).to(self.device)

    @property
    def calib_logit_scale(self) -> torch.Tensor:
        return self.calib_clip.logit_scale.exp().float()

    def calib_terms(self, logits, label, text_features, image=None) -> dict[str, torch.Tensor]:
        """The weighted --calib terms (fp32); ``image`` is needed by the baselines that use zero-shot logits."""
        if not hasattr(self, "calib_objective"):
            raise RuntimeError(f"{type(self).__name__}.calib_loss: call self.setup_calib(clip_model) in build_model")
        objective = self.calib_objective
        if objective is None:
            return {}
        zs_logits = None
        if objective.needs_zs_logits:
            if image is None:
                raise RuntimeError(f"--calib {self.cfg.TRAINER.CALIB.NAME} needs zero-shot logits: pass the "
                                   f"batch's images to calib_loss(logits, label, text_features, image)")
            with torch.no_grad():
                f = F.normalize(self.calib_clip.encode_image(image).float(), dim=-1)
                zs_logits = self.calib_logit_scale * f @ self.zs_text_features.t()
        text = F.normalize(text_features.float(), dim=-1)
        return objective(logits.float(), label, text, self.zs_text_features, zs_logits=zs_logits,
                         logit_scale=self.calib_logit_scale)

    def calib_loss(self, terms: dict[str, torch.Tensor], logits, label, text_features, image=None) -> torch.Tensor:
        """``sum(terms)`` after adding the --calib terms to ``terms`` (in place, so a loss summary can show them)."""
        terms.update(self.calib_terms(logits, label, text_features, image))
        return sum(t.float() for t in terms.values())

    def record_arrays(self) -> dict:
        if not hasattr(self, "zs_text_features"):
            return {}
        return {"zs_text_features": self.zs_text_features.float().cpu().numpy(),
                "logit_scale": np.float32(self.calib_logit_scale.item())}
