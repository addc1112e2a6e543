"""A trainer file in the style of the paper's ``trainers/coop.py`` (a MaPLe-era code base), written for the tests
from what that file does: it imports its loss terms from ``trainers.regularizers`` (a module of its own repository,
kept beside it here), builds CLIP with MaPLe's ``clip.build_model(state_dict, design_details)`` with every prompt
depth 0, and registers the name ``CoOp``. It must run UNMODIFIED with ``train.py --trainer-file``.
"""
import torch
import torch.nn as nn
from torch.nn import functional as F

from clip import clip
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer
from trainers.regularizers import margin_terms


def load_clip_to_cpu(cfg):
    model_path = clip._download(clip._MODELS[cfg.MODEL.BACKBONE.NAME])
    try:
        state_dict = torch.jit.load(model_path, map_location="cpu").eval().state_dict()
    except RuntimeError:
        state_dict = torch.load(model_path, map_location="cpu")
    design_details = {"trainer": "CoOp", "vision_depth": 0, "language_depth": 0, "vision_ctx": 0,
                      "language_ctx": 0}
    return clip.build_model(state_dict, design_details)


class TextEncoder(nn.Module):
    def __init__(self, clip_model):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.dtype = clip_model.dtype

    def forward(self, prompts, tokenized_prompts):
        x = (prompts + self.positional_embedding.type(self.dtype)).permute(1, 0, 2)
        x = self.transformer(x).permute(1, 0, 2)
        x = self.ln_final(x).type(self.dtype)
        return x[torch.arange(x.shape[0]), tokenized_prompts.argmax(dim=-1)] @ self.text_projection


class PromptLearner(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        n_ctx, dtype = cfg.TRAINER.COOP.N_CTX, clip_model.dtype
        ctx = torch.empty(n_ctx, clip_model.ln_final.weight.shape[0], dtype=dtype)
        nn.init.normal_(ctx, std=0.02)
        self.ctx = nn.Parameter(ctx)
        prefix = " ".join(["X"] * n_ctx)
        tokenized = torch.cat([clip.tokenize(f"{prefix} {c.replace('_', ' ')}.") for c in classnames])
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokenized).type(dtype)
        self.register_buffer("token_prefix", embedding[:, :1, :])
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:, :])
        self.tokenized_prompts, self.n_cls = tokenized, len(classnames)

    def forward(self):
        ctx = self.ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        return torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)


class CustomCLIP(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        self.prompt_learner = PromptLearner(cfg, classnames, clip_model)
        self.image_encoder, self.text_encoder = clip_model.visual, TextEncoder(clip_model)
        self.logit_scale, self.dtype = clip_model.logit_scale, clip_model.dtype

    def forward(self, image):
        f = self.image_encoder(image.type(self.dtype))
        t = self.text_encoder(self.prompt_learner(), self.prompt_learner.tokenized_prompts)
        f, t = f / f.norm(dim=-1, keepdim=True), t / t.norm(dim=-1, keepdim=True)
        return self.logit_scale.exp() * f @ t.t()


@TRAINER_REGISTRY.register()
class CoOp(TrainerX):
    def build_model(self):
        cfg = self.cfg
        clip_model = load_clip_to_cpu(cfg)
        if cfg.TRAINER.COOP.PREC in ("fp32", "amp"):
            clip_model.float()
        self.model = CustomCLIP(cfg, self.dm.dataset.classnames, clip_model)
        for name, param in self.model.named_parameters():
            param.requires_grad_("prompt_learner" in name)
        self.model.to(self.device)
        self.optim = build_optimizer(self.model.prompt_learner, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model("prompt_learner", self.model.prompt_learner, self.optim, self.sched)

    def forward_backward(self, batch):
        image, label = batch["img"].to(self.device), batch["label"].to(self.device)
        output = self.model(image)
        margin = margin_terms(output)
        loss = F.cross_entropy(output, label) + margin
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), "margin": margin.item(), "acc": compute_accuracy(output, label)[0].item()}
