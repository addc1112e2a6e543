"""OpenAI CLIP tokenisation (docs/method_notes.md#tokenisation) on top of open_clip's BPE.

open_clip's own `tokenize` always truncates; OpenAI's raises on over-long text, which is what the reference
methods rely on (a class name that does not fit must fail loudly), so the framing is done here.
"""
from __future__ import annotations

import functools
from typing import Sequence, Union

import torch

from common.errors import UserError

SOT_TOKEN = 49406  # <start_of_text>
EOT_TOKEN = 49407  # <end_of_text>, the largest id, so EOT position = argmax(ids)
CONTEXT_LENGTH = 77


@functools.lru_cache(maxsize=1)
def _bpe():
    """The BPE encoder with OpenAI's cleaning (ftfy, HTML unescape, whitespace collapse, lower case)."""
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer(clean="lower")
    assert (tok.sot_token_id, tok.eot_token_id) == (SOT_TOKEN, EOT_TOKEN), "unexpected BPE vocabulary"
    return tok


def tokenize(texts: Union[str, Sequence[str]], context_length: int = CONTEXT_LENGTH,
             truncate: bool = False) -> torch.LongTensor:
    """Token ids [N, context_length]: SOT, BPE tokens, EOT, zero padding.

    Too-long text raises a UserError naming the text; with `truncate=True` it keeps `context_length` tokens and
    forces the last one to EOT (OpenAI's semantics).
    """
    if isinstance(texts, str):
        texts = [texts]
    tok = _bpe()
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise UserError(f"clip.tokenize expects strings, got {type(text).__name__}: {text!r}")
        ids = [SOT_TOKEN] + tok.encode(text) + [EOT_TOKEN]
        if len(ids) > context_length:
            if not truncate:
                raise UserError(
                    f"Text {text!r} is {len(ids)} tokens long (with start/end tokens), more than the context "
                    f"length {context_length}. Shorten it (e.g. the class name or the number of context "
                    f"tokens) or tokenize with truncate=True.")
            ids = ids[:context_length]
            ids[-1] = EOT_TOKEN
        result[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    return result
