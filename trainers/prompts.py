"""Text-prompt assembly shared by every text-prompt method (docs/method_notes.md#prompt-assembly).

One class, :class:`TextPrompts`, holds what depends on the class names — the frozen embeddings of the placeholder
strings split into a SOS prefix and a suffix, the EOT positions, the class-name token counts — and assembles
``[SOS][ctx][class tokens . EOT pad]`` (or the ``middle`` / ``front`` variants of CoOp) from learnable context
vectors. The buffers are non-persistent: they are rebuilt from the new class names on the novel split and are never
written to, or read from, a checkpoint.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

import clip
from common.errors import UserError

POSITIONS = ("end", "middle", "front")


def clean_classname(name: str) -> str:
    """Class names enter prompts with ``_`` replaced by a space (every method but the ProDA reference)."""
    return name.replace("_", " ")


def init_phrase(ctx_init) -> str:
    """The ``CTX_INIT`` value as a phrase; ``""``/``False`` mean random init. ``True`` (KgCoOp/ProGrad yamls) means the
    customary phrase "a photo of a"."""
    if ctx_init is True:
        return "a photo of a"
    if not ctx_init:
        return ""
    return str(ctx_init).replace("_", " ").strip()


def count_tokens(text: str) -> int:
    """Number of BPE tokens of ``text`` (without SOS/EOT)."""
    ids = clip.tokenize([text])[0]
    return int(ids.argmax()) - 1


class TextPrompts(nn.Module):
    """Placeholder-string buffers for ``n_ctx`` context tokens and ``classnames``.

    ``placeholder`` is the phrase the learnable context overwrites: ``init`` when given, else ``"X X ... X"``. The
    context replaces token positions 1..n_ctx; further tokens of a longer phrase stay as fixed text (MaPLe/IVLP).
    """

    def __init__(self, text_encoder: nn.Module, classnames: Sequence[str], n_ctx: int, init: str = "",
                 position: str = "end"):
        super().__init__()
        if position not in POSITIONS:
            raise UserError(f"CLASS_TOKEN_POSITION must be one of {POSITIONS}, got {position!r}")
        self.n_ctx = int(n_ctx)
        if self.n_ctx < 1:
            raise UserError(f"the number of context tokens must be at least 1, got {self.n_ctx} "
                            "(TRAINER.<METHOD>.N_CTX / N_CTX_TEXT)")
        self.position = position
        self.classnames = [clean_classname(c) for c in classnames]
        placeholder = init if init else " ".join(["X"] * self.n_ctx)
        texts = [f"{placeholder} {name}." for name in self.classnames]
        ids = tokenize_prompts(texts, self.classnames)
        with torch.no_grad():
            emb = text_encoder.embed(ids.to(_device_of(text_encoder)))
        self.register_buffer("ids", ids, persistent=False)
        self.register_buffer("token_prefix", emb[:, :1].clone(), persistent=False)
        self.register_buffer("token_suffix", emb[:, 1 + self.n_ctx:].clone(), persistent=False)
        self.register_buffer("eot_idx", ids.argmax(dim=-1), persistent=False)
        self.name_lens = [count_tokens(name) for name in self.classnames]
        self._index_cache: dict[str, torch.Tensor] = {}
        init_vectors = emb[0, 1:1 + self.n_ctx].clone() if init else None
        self.init_vectors = init_vectors  # plain attribute: consumed once by the method's __init__

    @property
    def num_classes(self) -> int:
        return self.token_prefix.shape[0]

    def assemble(self, ctx: torch.Tensor, position: str | None = None) -> torch.Tensor:
        """Prompts C×77×Dt from context ``ctx`` of shape M×Dt (generic), C×M×Dt (class-specific) or
        B×M×Dt with ``batched`` semantics handled by :meth:`assemble_batched`. ``position`` overrides the
        class-token position for this call (ProDA mixes positions over one set of buffers)."""
        prefix, suffix = self.token_prefix, self.token_suffix
        C = prefix.shape[0]
        ctx = ctx.to(prefix.dtype)
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(C, -1, -1)
        position = self.position if position is None else position
        end = torch.cat([prefix, ctx, suffix], dim=1)
        if position == "end":
            return end
        if position not in POSITIONS:
            raise UserError(f"CLASS_TOKEN_POSITION must be one of {POSITIONS}, got {position!r}")
        index = self._reorder_index(position).to(end.device)
        return end.gather(1, index.unsqueeze(-1).expand(-1, -1, end.shape[-1]))

    def _reorder_index(self, position: str) -> torch.Tensor:
        """Per class, the row of the ``end`` assembly that lands at each output position (C×L), so ``middle`` and
        ``front`` are one gather instead of a Python loop over classes (cached per position)."""
        cached = self._index_cache.get(position)
        if cached is not None:
            return cached
        M, L, half = self.n_ctx, self.ids.shape[1], self.n_ctx // 2
        rows = []
        for n in self.name_lens:
            ctx_rows, name_rows = list(range(1, 1 + M)), list(range(1 + M, 1 + M + n))
            rest = list(range(1 + M + n, L))
            if position == "middle":
                order = [0] + ctx_rows[:half] + name_rows + ctx_rows[half:] + rest
            else:  # front
                order = [0] + name_rows + ctx_rows + rest
            rows.append(order)
        index = torch.tensor(rows, dtype=torch.long)
        self._index_cache[position] = index
        return index

    def assemble_batched(self, ctx: torch.Tensor) -> torch.Tensor:
        """Per-instance contexts B×M×Dt (CoCoOp) → prompts B×C×77×Dt (class token at the end)."""
        B, C = ctx.shape[0], self.num_classes
        prefix = self.token_prefix.unsqueeze(0).expand(B, -1, -1, -1)
        suffix = self.token_suffix.unsqueeze(0).expand(B, -1, -1, -1)
        ctx = ctx.to(prefix.dtype).unsqueeze(1).expand(-1, C, -1, -1)
        return torch.cat([prefix, ctx, suffix], dim=2)


def _device_of(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


def tokenize_prompts(texts: list[str], classnames: list[str]) -> torch.Tensor:
    try:
        return clip.tokenize(texts)
    except Exception as exc:  # name the offending class, whatever the tokenizer raised
        for text, name in zip(texts, classnames):
            try:
                clip.tokenize([text])
            except Exception:
                raise UserError(
                    f"the prompt for class {name!r} does not fit CLIP's 77-token context ({text!r}); "
                    "shorten the class name in the dataset's class list or use fewer context tokens "
                    "(TRAINER.<METHOD>.N_CTX)") from exc
        raise
