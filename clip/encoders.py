"""Prompt-aware CLIP towers (docs/method_notes.md#prompted-encoders, docs/architecture.md §1): the one transformer loop
every method uses. They hold references to the frozen CLIP submodules (no copies) and, given no prompts, compute
exactly open_clip's `encode_text(ids)` / `encode_image(images)`.

Truncation at the EOT (on by default, ``truncate_eot``): under CLIP's causal mask the EOT token attends only to the
positions before it, and the EOT token's output is the only one used, so the text tower runs over positions
``0 .. max(EOT)`` of the batch only (mask and positional embedding sliced). The result equals the 77-position
computation up to float summation order (docs/faithfulness.md); prompts of 20-30 tokens cost a third or less.
``checkpoint_chunk`` > 0 (training only) runs the tower over chunks of that many prompts under activation
checkpointing: only one chunk's activations are held at a time, recomputed in backward (exact, slower).

Deep prompts (IVLP, VPT-deep, MaPLe, PromptSRC): `deep_prompts[k]` is injected before block k+1 (k = 0..J-2);
a None entry leaves that layer's tokens as the previous block produced them. Text: rows 1..M of the block input
are overwritten. Vision: the last n_v tokens are replaced. Prompts get no positional embedding and are cast to
the tower dtype (the reference's `.half()` at injection), so gradients reach fp32 prompt parameters.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from open_clip.model import CLIP
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint

from common.errors import UserError

DeepPrompts = Optional[Sequence[Optional[torch.Tensor]]]
#: prompts per length group when a batch has at least twice as many (0: never group); see TextEncoder.group_size
GROUP_SIZE = 0


def _require_clip(clip_model) -> None:
    if not isinstance(clip_model, CLIP):
        raise UserError(f"clip.TextEncoder/VisionEncoder need an open_clip CLIP model (from clip.load), got "
                        f"{type(clip_model).__name__}.")


def _run_block(block: nn.Module, transformer: nn.Module, x: torch.Tensor,
               attn_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """One residual block on batch-first `x`, honouring the transformer's layout and grad checkpointing."""
    batch_first = getattr(transformer, "batch_first", False)  # open_clip < 2.24 ran blocks sequence-first
    if not batch_first:
        x = x.transpose(0, 1)
    if getattr(transformer, "grad_checkpointing", False) and torch.is_grad_enabled():
        x = checkpoint(block, x, None, None, attn_mask, use_reentrant=False)
    else:
        x = block(x, attn_mask=attn_mask)
    return x.transpose(0, 1) if not batch_first else x


def _project(x: torch.Tensor, proj) -> torch.Tensor:
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj


def _batched(p: torch.Tensor, n: int, dtype: torch.dtype, width: int, what: str) -> torch.Tensor:
    """A prompt [T, D] (shared) or [n, T, D] (per sample) as [n, T, D] in `dtype`."""
    if p.dim() not in (2, 3) or p.shape[-1] != width or (p.dim() == 3 and p.shape[0] not in (1, n)):
        raise UserError(f"{what} has shape {tuple(p.shape)}; expected [T, {width}] or [{n}, T, {width}] "
                        f"(the prompt width must equal the backbone's tower width {width}).")
    return p.to(dtype).expand(n, -1, -1)


def _check_depth(deep_prompts: DeepPrompts, num_layers: int, what: str) -> list:
    deep = list(deep_prompts) if deep_prompts is not None else []
    if len(deep) > num_layers - 1:
        raise UserError(f"{len(deep)} deep {what} prompt sets (prompt depth {len(deep) + 1}) exceed the "
                        f"{num_layers} layers of the backbone; use a prompt depth of at most {num_layers}.")
    return deep


def _tower_dtype(transformer: nn.Module) -> torch.dtype:
    if hasattr(transformer, "get_cast_dtype"):
        return transformer.get_cast_dtype()
    return transformer.resblocks[0].mlp.c_fc.weight.dtype


class TextEncoder(nn.Module):
    """CLIP's text tower on prompt embeddings: [N, L, Dt] (+ deep prompts) -> [N, E], not normalised."""

    def __init__(self, clip_model: CLIP):
        super().__init__()
        _require_clip(clip_model)
        pool = getattr(clip_model, "text_pool_type", "argmax")
        if pool != "argmax":
            raise UserError(f"clip.TextEncoder pools at the EOT index (OpenAI's 'argmax'); this model's text "
                            f"pool type is {pool!r}, which is not supported.")
        self.token_embedding = clip_model.token_embedding
        self.positional_embedding = clip_model.positional_embedding
        self.transformer = clip_model.transformer
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.register_buffer("attn_mask", clip_model.attn_mask, persistent=False)
        self.context_length: int = clip_model.positional_embedding.shape[0]
        self.width: int = clip_model.positional_embedding.shape[1]
        self.num_layers: int = len(self.transformer.resblocks)
        proj = self.text_projection
        self.output_dim: int = (self.width if proj is None else
                                proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1])
        #: run over positions 0..max(EOT) only (exact; MODEL.TEXT_TRUNCATE_EOT, see set_text_options)
        self.truncate_eot: bool = bool(getattr(clip_model, "text_truncate_eot", True))
        #: > 0: activation checkpointing over chunks of this many prompts in training (MODEL.TEXT_CHECKPOINT_CHUNK)
        self.checkpoint_chunk: int = int(getattr(clip_model, "text_checkpoint_chunk", 0))
        #: > 0 (with truncate_eot): batches of at least twice this many prompts run sorted by length in groups of
        #: this size, each cut at its own last EOT (GROUP_SIZE; measured in docs/performance.md)
        self.group_size: int = GROUP_SIZE if self.truncate_eot else 0

    @property
    def dtype(self) -> torch.dtype:
        return _tower_dtype(self.transformer)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Frozen token embeddings [N, L, Dt] of token ids [N, L], in the tower dtype."""
        if ids.dim() != 2 or ids.shape[1] != self.context_length:
            raise UserError(f"token ids have shape {tuple(ids.shape)}; expected [N, {self.context_length}] "
                            f"(use clip.tokenize).")
        return self.token_embedding(ids.to(self.token_embedding.weight.device)).to(self.dtype)

    def forward(self, prompts: torch.Tensor, eot_idx: torch.Tensor,
                deep_prompts: DeepPrompts = None) -> torch.Tensor:
        """`prompts` [N, L, Dt] (SOT, context, class tokens, EOT, padding), `eot_idx` [N] the EOT positions,
        `deep_prompts[k]` [M, Dt] overwriting rows 1..M of block k+1's input. Returns [N, E], not normalised."""
        if prompts.dim() != 3 or prompts.shape[1:] != (self.context_length, self.width):
            raise UserError(f"text prompts have shape {tuple(prompts.shape)}; expected "
                            f"[N, {self.context_length}, {self.width}].")
        deep = _check_depth(deep_prompts, self.num_layers, "text")
        n, group = prompts.shape[0], int(self.group_size)
        if self.truncate_eot and group > 0 and n >= 2 * group:
            order = torch.argsort(eot_idx.detach().cpu(), stable=True).to(prompts.device)
            parts = [self._chunked(prompts[idx], eot_idx[idx], _take_deep(deep, idx, n)) for idx in order.split(group)]
            return torch.cat(parts)[torch.argsort(order)]
        return self._chunked(prompts, eot_idx, deep)

    def _chunked(self, prompts: torch.Tensor, eot_idx: torch.Tensor, deep: list) -> torch.Tensor:
        n, chunk = prompts.shape[0], int(self.checkpoint_chunk)
        if chunk > 0 and n > chunk and torch.is_grad_enabled():
            parts = [checkpoint(self._encode, prompts[i:i + chunk], eot_idx[i:i + chunk],
                                _slice_deep(deep, i, i + chunk, n), use_reentrant=False)
                     for i in range(0, n, chunk)]
            return torch.cat(parts)
        return self._encode(prompts, eot_idx, deep)

    def positions(self, eot_idx: torch.Tensor, deep: list) -> int:
        """How many leading positions the tower runs over: all of them, or (truncate_eot) up to the last EOT and
        past the last deep-prompt row, so every row the EOT outputs depend on is computed as in the full pass."""
        if not self.truncate_eot or eot_idx.numel() == 0:
            return self.context_length
        last = int(eot_idx.max()) + 1
        rows = max((1 + p.shape[-2] for p in deep if p is not None), default=0)
        return min(self.context_length, max(last, rows))

    def _encode(self, prompts: torch.Tensor, eot_idx: torch.Tensor, deep: list) -> torch.Tensor:
        n, dtype = prompts.shape[0], self.dtype
        length = self.positions(eot_idx, deep)
        x = prompts[:, :length].to(dtype) + self.positional_embedding[:length].to(dtype)
        mask = self.attn_mask
        if mask is not None and length < mask.shape[0]:
            mask = mask[:length, :length]
        for i, block in enumerate(self.transformer.resblocks):
            if 1 <= i <= len(deep) and deep[i - 1] is not None:
                p = _batched(deep[i - 1], n, dtype, self.width, f"deep text prompt {i - 1}")
                if 1 + p.shape[1] >= self.context_length:
                    raise UserError(f"deep text prompt {i - 1} has {p.shape[1]} tokens; at most "
                                    f"{self.context_length - 2} fit after SOT.")
                x = torch.cat([x[:, :1], p, x[:, 1 + p.shape[1]:]], dim=1)
            x = _run_block(block, self.transformer, x, mask)
        x = self.ln_final(x)
        x = x[torch.arange(n, device=x.device), eot_idx.to(device=x.device, dtype=torch.long)]
        return _project(x, self.text_projection)


def _take_deep(deep: list, idx: torch.Tensor, n: int) -> list:
    """Per-prompt deep prompts [n, M, D] reordered/selected with the prompts; shared ones as they are."""
    return [p[idx] if p is not None and p.dim() == 3 and p.shape[0] == n and n > 1 else p for p in deep]


def _slice_deep(deep: list, start: int, stop: int, n: int) -> list:
    """Per-prompt deep prompts [n, M, D] sliced to a chunk of prompts; shared ones [M, D] / [1, M, D] as they are."""
    return [p[start:stop] if p is not None and p.dim() == 3 and p.shape[0] == n and n > 1 else p for p in deep]


def set_text_options(clip_model: CLIP, truncate_eot: bool = True, checkpoint_chunk: int = 0) -> CLIP:
    """Record the text-tower speed options on a CLIP model; every :class:`TextEncoder` built on it afterwards (the
    methods' towers, ``model.encode_text``, the zero-shot and frozen --calib features) follows them."""
    if int(checkpoint_chunk) < 0:
        raise UserError(f"MODEL.TEXT_CHECKPOINT_CHUNK must be >= 0 (0 = off), got {checkpoint_chunk!r}.")
    clip_model.text_truncate_eot = bool(truncate_eot)
    clip_model.text_checkpoint_chunk = int(checkpoint_chunk)
    return clip_model


class VisionEncoder(nn.Module):
    """CLIP's image tower with optional visual prompts: [B, 3, H, W] -> [B, E], not normalised.

    ViT: prompts [n_v, Dv] are appended after the patch tokens (no positional embedding) and pass through
    ln_pre; `deep_prompts[k]` replaces the last n_v tokens before block k+1; output ln_post(class token) @ proj.
    ModifiedResNet: the plain forward; prompts must be None.
    """

    def __init__(self, clip_model: CLIP):
        super().__init__()
        _require_clip(clip_model)
        visual = clip_model.visual
        self.visual = visual
        self.is_vit = isinstance(visual, VisionTransformer)
        if self.is_vit:
            if getattr(visual, "attn_pool", None) is not None:
                raise UserError("clip.VisionEncoder does not support ViTs with an attentional pooler (CoCa).")
            self.pool_type = getattr(visual, "pool_type", "tok")
            if self.pool_type not in ("tok", "avg"):
                raise UserError(f"clip.VisionEncoder supports class-token or average pooling, not "
                                f"{self.pool_type!r}.")
            self.width: int = visual.transformer.width
            self.num_layers: int = len(visual.transformer.resblocks)
        elif isinstance(visual, ModifiedResNet):
            self.width = visual.attnpool.c_proj.in_features  # the attention-pool (feature) width
            self.num_layers = 0  # no token sequence to prompt
        else:
            raise UserError(f"clip.VisionEncoder supports open_clip ViT and ModifiedResNet towers, not "
                            f"{type(visual).__name__}.")
        proj = getattr(visual, "proj", None) if self.is_vit else None
        self.output_dim: int = visual.output_dim if proj is None or not self.is_vit else proj.shape[1]
        self.supports_prompts: bool = self.is_vit

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def forward(self, images: torch.Tensor, prompts: Optional[torch.Tensor] = None,
                deep_prompts: DeepPrompts = None) -> torch.Tensor:
        dtype = self.dtype
        if not self.is_vit:
            if prompts is not None or deep_prompts:
                raise UserError("Visual prompts need a ViT backbone; ResNet CLIP backbones accept only "
                                "prompts=None (choose a ViT backbone for VPT/IVLP/MaPLe/PromptSRC).")
            return self.visual(images.to(dtype))
        v, b = self.visual, images.shape[0]
        deep = _check_depth(deep_prompts, self.num_layers, "vision")
        if prompts is None and any(p is not None for p in deep):
            raise UserError("deep visual prompts replace the appended prompt tokens, so they need first-layer "
                            "visual prompts too (prompts=None was given).")
        x = v.conv1(images.to(dtype))  # [B, Dv, grid, grid]
        x = x.reshape(b, x.shape[1], -1).permute(0, 2, 1)
        x = torch.cat([v.class_embedding.to(x.dtype).view(1, 1, -1).expand(b, -1, -1), x], dim=1)
        if x.shape[1] != v.positional_embedding.shape[0]:
            raise UserError(f"images of size {tuple(images.shape[-2:])} give {x.shape[1] - 1} patches; this "
                            f"backbone expects {tuple(v.image_size)} input (check INPUT.SIZE).")
        x = v.patch_dropout(x + v.positional_embedding.to(x.dtype))
        n_v = 0
        if prompts is not None:
            if self.pool_type != "tok":
                raise UserError("visual prompts need class-token pooling; this ViT averages its tokens.")
            p = _batched(prompts, b, dtype, self.width, "visual prompt")
            n_v = p.shape[1]
            x = torch.cat([x, p], dim=1)
        x = v.ln_pre(x)
        for i, block in enumerate(v.transformer.resblocks):
            if 1 <= i <= len(deep) and deep[i - 1] is not None:
                p = _batched(deep[i - 1], b, dtype, self.width, f"deep visual prompt {i - 1}")
                if p.shape[1] != n_v:
                    raise UserError(f"deep visual prompt {i - 1} has {p.shape[1]} tokens but {n_v} visual "
                                    f"prompt tokens were appended; they must match.")
                x = torch.cat([x[:, :-n_v], p], dim=1)
            x = _run_block(block, v.transformer, x, None)
        if getattr(v, "final_ln_after_pool", False):
            pooled = v.ln_post(self._pool(x))
        else:
            pooled = self._pool(v.ln_post(x))
        return _project(pooled, getattr(v, "proj", None))

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0] if self.pool_type == "tok" else x[:, 1:].mean(dim=1)
