"""A trainer file in the style of the CoOp repository's ``trainers/cocoop.py``, written for the tests from what that
file does: it registers the name ``CoCoOp``, reads ``cfg.TRAINER.COCOOP``, and conditions the context on each image
through a small meta-net (``Linear -> ReLU -> Linear``) whose output shifts every context vector; in training mode
the model returns the loss itself. It must run UNMODIFIED with ``train.py --trainer-file``.
"""
import os.path as osp
from collections import OrderedDict

import torch
import torch.nn as nn
from torch.cuda.amp import GradScaler, autocast
from torch.nn import functional as F

from clip import clip
from clip.simple_tokenizer import SimpleTokenizer as _Tokenizer
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import load_checkpoint

_tokenizer = _Tokenizer()


def load_clip_to_cpu(cfg):
    model_path = clip._download(clip._MODELS[cfg.MODEL.BACKBONE.NAME])
    try:
        state_dict = torch.jit.load(model_path, map_location="cpu").eval().state_dict()
    except RuntimeError:
        state_dict = torch.load(model_path, map_location="cpu")
    return clip.build_model(state_dict)


class TextEncoder(nn.Module):
    def __init__(self, clip_model):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.dtype = clip_model.dtype

    def forward(self, prompts, tokenized_prompts):
        x = prompts + self.positional_embedding.type(self.dtype)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x).type(self.dtype)
        return x[torch.arange(x.shape[0]), tokenized_prompts.argmax(dim=-1)] @ self.text_projection


class PromptLearner(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        node = cfg.TRAINER.COCOOP
        n_cls, n_ctx, ctx_init = len(classnames), node.N_CTX, node.CTX_INIT
        dtype = clip_model.dtype
        ctx_dim = clip_model.ln_final.weight.shape[0]
        vis_dim = clip_model.visual.output_dim
        if ctx_init:
            ctx_init = ctx_init.replace("_", " ")
            n_ctx = len(ctx_init.split(" "))
            with torch.no_grad():
                embedding = clip_model.token_embedding(clip.tokenize(ctx_init)).type(dtype)
            ctx_vectors, prompt_prefix = embedding[0, 1:1 + n_ctx, :], ctx_init
        else:
            ctx_vectors = torch.empty(n_ctx, ctx_dim, dtype=dtype)
            nn.init.normal_(ctx_vectors, std=0.02)
            prompt_prefix = " ".join(["X"] * n_ctx)
        print(f'Initial context: "{prompt_prefix}"; number of context words (tokens): {n_ctx}')
        self.ctx = nn.Parameter(ctx_vectors)
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(vis_dim, vis_dim // 16)),
            ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(vis_dim // 16, ctx_dim)),
        ]))
        if node.PREC == "fp16":
            self.meta_net.half()
        classnames = [name.replace("_", " ") for name in classnames]
        tokenized_prompts = torch.cat([clip.tokenize(f"{prompt_prefix} {name}.") for name in classnames])
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokenized_prompts).type(dtype)
        self.register_buffer("token_prefix", embedding[:, :1, :])
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:, :])
        self.n_cls, self.n_ctx = n_cls, n_ctx
        self.tokenized_prompts = tokenized_prompts

    def forward(self, im_features):
        bias = self.meta_net(im_features).unsqueeze(1)  # (batch, 1, ctx_dim)
        ctx_shifted = self.ctx.unsqueeze(0) + bias  # (batch, n_ctx, ctx_dim)
        prompts = []
        for ctx_i in ctx_shifted:
            ctx_i = ctx_i.unsqueeze(0).expand(self.n_cls, -1, -1)
            prompts.append(torch.cat([self.token_prefix, ctx_i, self.token_suffix], dim=1))
        return torch.stack(prompts)


class CustomCLIP(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        self.prompt_learner = PromptLearner(cfg, classnames, clip_model)
        self.tokenized_prompts = self.prompt_learner.tokenized_prompts
        self.image_encoder = clip_model.visual
        self.text_encoder = TextEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype

    def forward(self, image, label=None):
        logit_scale = self.logit_scale.exp()
        image_features = self.image_encoder(image.type(self.dtype))
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        prompts = self.prompt_learner(image_features)
        logits = []
        for pts_i, imf_i in zip(prompts, image_features):
            text_features = self.text_encoder(pts_i, self.tokenized_prompts)
            text_features = text_features / text_features.norm(dim=-1, keepdim=True)
            logits.append(logit_scale * imf_i @ text_features.t())
        logits = torch.stack(logits)
        if self.prompt_learner.training:
            return F.cross_entropy(logits, label)
        return logits


@TRAINER_REGISTRY.register()
class CoCoOp(TrainerX):
    def check_cfg(self, cfg):
        assert cfg.TRAINER.COCOOP.PREC in ["fp16", "fp32", "amp"]

    def build_model(self):
        cfg = self.cfg
        clip_model = load_clip_to_cpu(cfg)
        if cfg.TRAINER.COCOOP.PREC in ("fp32", "amp"):
            clip_model.float()
        self.model = CustomCLIP(cfg, self.dm.dataset.classnames, clip_model)
        for name, param in self.model.named_parameters():
            if "prompt_learner" not in name:
                param.requires_grad_(False)
        self.model.to(self.device)
        self.optim = build_optimizer(self.model.prompt_learner, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model("prompt_learner", self.model.prompt_learner, self.optim, self.sched)
        self.scaler = GradScaler() if cfg.TRAINER.COCOOP.PREC == "amp" else None

    def forward_backward(self, batch):
        image, label = batch["img"].to(self.device), batch["label"].to(self.device)
        if self.scaler is not None:
            with autocast():
                loss = self.model(image, label)
            self.optim.zero_grad()
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optim)
            self.scaler.update()
        else:
            loss = self.model(image, label)
            self.optim.zero_grad()
            loss.backward()
            self.optim.step()
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item()}

    def load_model(self, directory, epoch=None):
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return
        model_file = "model-best.pth.tar" if epoch is None else f"model.pth.tar-{epoch}"
        for name in self.get_model_names():
            model_path = osp.join(directory, name, model_file)
            if not osp.exists(model_path):
                raise FileNotFoundError(f'Model not found at "{model_path}"')
            state_dict = load_checkpoint(model_path)["state_dict"]
            state_dict.pop("token_prefix", None)
            state_dict.pop("token_suffix", None)
            self._models[name].load_state_dict(state_dict, strict=False)
