"""Contrastive pre-training of toy-clip on drawings of the whole toy world.

First a pool of ``per_class`` drawings of each of the 192 world classes is drawn (96-pixel uint8, kept in memory).
Each step takes one pool image of each of ``batch_size`` distinct world classes (so a batch has no false
negatives), flips it horizontally half the time, captions it with a fresh random template, and minimises CLIP's
symmetric InfoNCE loss. Images reach the model through the exact linear form of the pipeline's test transform
(PIL bicubic resize to 224, CLIP normalisation) applied as two matrix products to the whole batch, which is what
makes pre-training fit in minutes on a CPU. AdamW with linear warm-up and
cosine decay; no weight decay on embeddings, gains, biases and the temperature (the token rows of words the captions
never use therefore stay exactly at their seeded init, which is what lets the checkpoint omit them). The
temperature is clamped at 100 as in CLIP. Deterministic for a given seed, thread count and library versions.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

import clip

from . import world
from .backbone import build_architecture, checkpoint_dict, from_checkpoint
from .zeroshot import CLIP_MEAN, CLIP_STD, TEMPLATE, clip_transform, text_features, zeroshot_logits


@dataclass
class PretrainConfig:
    steps: int = 1500
    batch_size: int = 96
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.1
    seed: int = 0
    threads: int = 1  # bits depend on it; 1 also runs best on a CPU other jobs share
    per_class: int = 48  # pool drawings per world class
    eval_per_class: int = 10  # held-out images per dataset class for the final zero-shot check


def bicubic_matrix(src: int, dst: int) -> torch.Tensor:
    """dst×src matrix of PIL's bicubic resize along one axis (PIL resizes separably), read off by resizing the
    unit vectors as float images: ``M @ X @ M.T`` is PIL's resize of the src×src image X, before rounding."""
    m = np.zeros((dst, src), dtype=np.float32)
    for j in range(src):
        unit = np.zeros((1, src), dtype=np.float32)
        unit[0, j] = 1.0
        m[:, j] = np.asarray(Image.fromarray(unit, mode="F").resize((dst, 1), Image.BICUBIC))[0]
    return torch.from_numpy(m)


def to_model_input(images: torch.Tensor, resize: torch.Tensor) -> torch.Tensor:
    """uint8 B×H×W×3 square images -> the test transform's normalised B×3×224×224 (PIL's two bicubic passes with
    their uint8 clipping, to within one grey level of rounding)."""
    x = images.permute(0, 3, 1, 2).float()
    x = (x @ resize.t()).clamp_(0, 255).round_()  # PIL: horizontal pass first, stored as uint8
    x = (x.transpose(2, 3) @ resize.t()).clamp_(0, 255).round_().transpose(2, 3) / 255.0  # one GEMM, not 288
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def draw_pool(per_class: int, rng: np.random.Generator, progress: bool) -> tuple[torch.Tensor, list]:
    """``per_class`` drawings of every world class: uint8 tensor [192·per_class, 96, 96, 3] (class-major) and
    their Scenes."""
    images = np.empty((len(world.WORLD) * per_class, world.IMAGE_SIZE, world.IMAGE_SIZE, 3), dtype=np.uint8)
    scenes = []
    jobs = [cls for cls in world.WORLD for _ in range(per_class)]
    for k, cls in enumerate(tqdm(jobs, desc="drawing the pre-training pool", disable=not progress, unit="img")):
        img, scene = world.render(cls, rng)
        images[k] = np.asarray(img)
        scenes.append(scene)
    return torch.from_numpy(images), scenes


def encode_text_prefix(model, ids: torch.Tensor) -> torch.Tensor:
    """``model.encode_text`` computed on the tokens up to the longest EOT only: with the causal mask, positions
    after EOT cannot change the EOT feature, so this equals the full 77-token pass at a fraction of the cost."""
    eot = ids.argmax(dim=-1)
    n = int(eot.max()) + 1
    x = model.token_embedding(ids[:, :n]) + model.positional_embedding[:n]
    x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
    x = model.ln_final(x)[torch.arange(len(ids)), eot]
    return x @ model.text_projection


def _param_groups(model, weight_decay: float) -> list[dict]:
    no_decay = ("token_embedding", "positional_embedding", "class_embedding", "logit_scale")
    decay, rest = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and not any(k in name for k in no_decay) else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@torch.no_grad()
def evaluate(model, per_class: int, seed: int) -> dict[str, float]:
    """Zero-shot accuracy (%) with the single template on held-out drawings of the dataset classes, unfaded (the
    pre-training distribution; the Toy dataset fades its colours, see ``toy.data.SATURATION``): each half
    as its own classification problem (as base-to-novel evaluation does), and over all 48 classes."""
    model.eval()
    rng = np.random.default_rng([seed, 1])  # a stream pre-training never draws from
    tf = clip_transform()
    halves = {"base": world.CLASSES[:world.NUM_BASE], "new": world.CLASSES[world.NUM_BASE:],
              "all": world.CLASSES}
    out = {}
    for key, classes in halves.items():
        text = text_features(model, [c.name for c in classes], TEMPLATE)
        correct = 0
        for label, cls in enumerate(classes):
            images = torch.stack([tf(world.render(cls, rng)[0]) for _ in range(per_class)])
            correct += (zeroshot_logits(model, images, text).argmax(1) == label).sum().item()
        out[key] = 100.0 * correct / (per_class * len(classes))
    return out


def pretrain(cfg: PretrainConfig, progress: bool = True) -> tuple[torch.nn.Module, dict]:
    """Pre-train toy-clip; returns the fp32 model (eval mode) and the checkpoint dict to save."""
    if cfg.batch_size > len(world.WORLD):
        raise ValueError(f"batch_size {cfg.batch_size} exceeds the {len(world.WORLD)} world classes")
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        start = time.time()
        model = build_architecture(cfg.seed).train()
        opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg.warmup, cfg.steps))
        rng = np.random.default_rng([cfg.seed, 0])
        pool, scenes = draw_pool(cfg.per_class, rng, progress)
        resize = bicubic_matrix(world.IMAGE_SIZE, 224)
        used: set[int] = set()
        order: list[int] = []
        bar = tqdm(range(cfg.steps), desc="pre-training toy-clip", disable=not progress, unit="step")
        for _ in bar:
            if len(order) < cfg.batch_size:
                order += rng.permutation(len(world.WORLD)).tolist()
            picked, order = order[:cfg.batch_size], order[cfg.batch_size:]
            rows = [c * cfg.per_class + int(rng.integers(cfg.per_class)) for c in picked]
            batch = pool[rows]
            flip = torch.from_numpy(rng.uniform(size=len(rows)) < 0.5)
            batch[flip] = batch[flip].flip(2)
            images = to_model_input(batch, resize)
            ids = clip.tokenize([world.caption(world.WORLD[c], scenes[r], rng) for c, r in zip(picked, rows)])
            used.update(ids.unique().tolist())
            img = F.normalize(model.encode_image(images), dim=-1)
            txt = F.normalize(encode_text_prefix(model, ids), dim=-1)
            logits = model.logit_scale.exp() * img @ txt.t()
            target = torch.arange(len(picked))
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            bar.set_postfix(loss=f"{loss.item():.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
        train_seconds = time.time() - start
        used.discard(0)  # padding: never reaches an EOT feature, so its row never changes
        ckpt = checkpoint_dict(model.eval(), torch.tensor(sorted(used)), cfg.seed, {})
        acc = evaluate(from_checkpoint(ckpt), cfg.eval_per_class, cfg.seed)  # the shipped (fp16) form
    finally:
        torch.set_num_threads(threads)
    ckpt["meta"] = {"config": asdict(cfg), "zero_shot_accuracy": acc, "train_seconds": round(train_seconds, 1),
                    "torch": str(torch.__version__), "world_classes": len(world.WORLD)}
    return model, ckpt
