"""Contrastive pre-training of toy-clip on drawings of the whole toy world.

First a pool of ``per_class`` drawings of each of the 192 world classes is drawn and put through the pipeline's
test-transform resize (PIL bicubic, 96 -> 224) once, kept in memory as uint8 (about 1.4 GB for the default 48 per
class). Each step takes one pool image of each of ``batch_size`` distinct world classes (so a batch has no false
negatives), flips it horizontally half the time, captions it with a fresh random template, and minimises CLIP's
symmetric InfoNCE loss. AdamW with linear warm-up and cosine decay; no weight decay on embeddings, gains, biases and
the temperature, so the token rows of words the captions never use stay exactly at their seeded init: that lets the
loop train only the caption vocabulary's rows (``CompactTokenEmbedding``, the same optimisation without a dense
49,408-row update per step) and the checkpoint omit the rest. The text pass stops at the longest caption
(``encode_text_prefix``, exact under the causal mask). The temperature is clamped at 100 as in CLIP. Deterministic
for a given seed, thread count (``threads``, default 2, fixes it whatever the machine), library versions and CPU.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import clip

from . import world
from .backbone import VISION, build_architecture, checkpoint_dict, from_checkpoint
from .zeroshot import CLIP_MEAN, CLIP_STD, TEMPLATE, clip_geometry, clip_transform, text_features, zeroshot_logits

INPUT_SIZE = VISION["image_size"]


@dataclass
class PretrainConfig:
    steps: int = 1500
    batch_size: int = 96
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.1
    seed: int = 0
    threads: int = 2  # the bits depend on it
    per_class: int = 48  # pool drawings per world class
    eval_per_class: int = 10  # held-out images per dataset class for the final zero-shot check


def draw_pool(per_class: int, rng: np.random.Generator, progress: bool) -> tuple[torch.Tensor, list]:
    """``per_class`` drawings of every world class, already through the test transform's PIL resize to 224 (done
    once here, not at every step): uint8 tensor [192·per_class, 3, 224, 224] (class-major) and their Scenes."""
    geometry = clip_geometry(INPUT_SIZE)
    images = np.empty((len(world.WORLD) * per_class, 3, INPUT_SIZE, INPUT_SIZE), dtype=np.uint8)
    scenes = []
    jobs = [cls for cls in world.WORLD for _ in range(per_class)]
    for k, cls in enumerate(tqdm(jobs, desc="drawing the pre-training pool", disable=not progress, unit="img")):
        img, scene = world.render(cls, rng)
        images[k] = np.asarray(geometry(img)).transpose(2, 0, 1)
        scenes.append(scene)
    return torch.from_numpy(images), scenes


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 B×3×H×W (already resized) -> the test transform's normalised float tensor (ToTensor, Normalize)."""
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return images.float().mul_(1 / (255.0 * std)).sub_(torch.tensor(CLIP_MEAN).view(1, 3, 1, 1) / std)


def caption_vocabulary() -> torch.Tensor:
    """Sorted token ids of every word a pre-training caption can contain (CLIP's BPE encodes word by word, so
    one caption per template and scene holding all attribute words covers every caption ``world.caption``
    writes; ``CompactTokenEmbedding`` fails loudly should one ever escape it)."""
    words = " ".join(["plain", *world.PATTERNS[1:], *world.COLOURS, *world.SHAPES])
    texts = [t.replace("{size}", size).replace("{bg}", bg).format(words) for t in world.CAPTION_TEMPLATES
             for size in world.SIZES for bg in world.BACKGROUNDS]
    return clip.tokenize(texts).unique()


class CompactTokenEmbedding(torch.nn.Module):
    """Stands in for the 49,408-row token embedding during pre-training with only the rows of ``vocab``.

    Rows outside the captions' vocabulary never receive a gradient and carry no weight decay, so AdamW never moves
    them: training the ``vocab`` rows alone is the same optimisation, without a dense 6.3M-entry gradient and
    optimiser update at every step. ``write_back`` puts the trained rows into the full table."""

    def __init__(self, full: torch.nn.Embedding, vocab: torch.Tensor):
        super().__init__()
        self.vocab = vocab
        self.weight = torch.nn.Parameter(full.weight.detach()[vocab].clone())
        remap = torch.full((full.num_embeddings,), -1, dtype=torch.long)
        remap[vocab] = torch.arange(len(vocab))
        self.register_buffer("remap", remap)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.remap[ids]
        if (rows < 0).any():
            missing = sorted(set(ids[rows < 0].tolist()))
            raise RuntimeError(f"caption tokens {missing} are missing from caption_vocabulary(); add their words")
        return F.embedding(rows, self.weight)

    @torch.no_grad()
    def write_back(self, full: torch.nn.Embedding) -> None:
        full.weight[self.vocab] = self.weight


def encode_text_prefix(model, ids: torch.Tensor) -> torch.Tensor:
    """``model.encode_text`` computed on the tokens up to the longest EOT only: with the causal mask, positions
    after EOT cannot change the EOT feature, so this equals the full 77-token pass at a fraction of the cost."""
    eot = ids.argmax(dim=-1)
    n = int(eot.max()) + 1
    x = model.token_embedding(ids[:, :n]) + model.positional_embedding[:n]
    # batch-first with an explicit mask: open_clip's call (clip.load's models name it forward_batch_first)
    run = getattr(model.transformer, "forward_batch_first", model.transformer)
    x = run(x, attn_mask=model.attn_mask[:n, :n])
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


def _train(model, cfg: PretrainConfig, progress: bool) -> set[int]:
    """The contrastive loop; returns the token ids the captions used. Trains ``model`` in place, with the compact
    token embedding standing in for the full one until the end."""
    full_embedding = model.token_embedding
    model.token_embedding = CompactTokenEmbedding(full_embedding, caption_vocabulary())
    # torch >= 2.4 has a fused CPU AdamW (the shipped weights used it); older releases take the default kernel
    fused = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 4) or None
    opt = torch.optim.AdamW(_param_groups(model.train(), cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6,
                            fused=fused)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg.warmup, cfg.steps))
    rng = np.random.default_rng([cfg.seed, 0])
    pool, scenes = draw_pool(cfg.per_class, rng, progress)
    used: set[int] = set()
    order: list[int] = []
    try:
        for _ in (bar := tqdm(range(cfg.steps), desc="pre-training toy-clip", disable=not progress, unit="step")):
            if len(order) < cfg.batch_size:
                order += rng.permutation(len(world.WORLD)).tolist()
            picked, order = order[:cfg.batch_size], order[cfg.batch_size:]
            rows = [c * cfg.per_class + int(rng.integers(cfg.per_class)) for c in picked]
            batch = pool[rows]
            flip = torch.from_numpy(rng.uniform(size=len(rows)) < 0.5)
            batch[flip] = batch[flip].flip(3)
            ids = clip.tokenize([world.caption(world.WORLD[c], scenes[r], rng) for c, r in zip(picked, rows)])
            used.update(ids.unique().tolist())
            img = F.normalize(model.encode_image(normalise(batch)), dim=-1)
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
    finally:
        model.token_embedding.write_back(full_embedding)
        model.token_embedding = full_embedding
    used.discard(0)  # padding: never reaches an EOT feature, so its row never changes
    return used


def pretrain(cfg: PretrainConfig, progress: bool = True) -> tuple[torch.nn.Module, dict]:
    """Pre-train toy-clip; returns the fp32 model (eval mode) and the checkpoint dict to save. Leaves torch's
    thread count as it found it."""
    if cfg.batch_size > len(world.WORLD):
        raise ValueError(f"batch_size {cfg.batch_size} exceeds the {len(world.WORLD)} world classes")
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        start = time.time()
        model = build_architecture(cfg.seed)
        used = _train(model, cfg, progress)
        train_seconds = time.time() - start
        ckpt = checkpoint_dict(model.eval(), torch.tensor(sorted(used)), cfg.seed, {})
        acc = evaluate(from_checkpoint(ckpt), cfg.eval_per_class, cfg.seed)  # the shipped (fp16) form
    finally:
        torch.set_num_threads(threads)
    ckpt["meta"] = {"config": asdict(cfg), "zero_shot_accuracy": acc, "train_seconds": round(train_seconds, 1),
                    "torch": str(torch.__version__), "world_classes": len(world.WORLD)}
    return model, ckpt
