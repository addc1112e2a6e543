"""Prompt assembly (docs/method_notes.md#prompt-assembly, #coop): the context overwrites positions 1..M; ``middle`` and
``front`` move the class-name tokens, keep the length and the EOT position, and are built by one gather."""
import pytest
import torch

import clip
from trainers.prompts import TextPrompts


@pytest.fixture(scope="module")
def encoder():
    return clip.TextEncoder(clip.load("tiny-vit"))


NAMES = ["cat", "golden retriever dog", "x", "airplane_model"]


def test_end_is_prefix_ctx_suffix(encoder):
    tp = TextPrompts(encoder, NAMES, n_ctx=4)
    ctx = torch.randn(4, encoder.width)
    out = tp.assemble(ctx)
    assert out.shape == (4, 77, encoder.width)
    assert torch.equal(out[:, 1:5], ctx.expand(4, -1, -1))
    assert torch.equal(out[:, 5:], tp.token_suffix)
    # the EOT of the placeholder string "X X X X <name>." stays where the ids say
    assert tp.eot_idx.tolist() == [int(i) for i in tp.ids.argmax(-1)]
    assert tp.name_lens == [1, 3, 1, 2]  # "airplane model" after "_" -> " "


@pytest.mark.parametrize("position", ["middle", "front"])
def test_middle_and_front_match_the_hand_layout(encoder, position):
    tp = TextPrompts(encoder, NAMES, n_ctx=5, position=position)
    ctx = torch.randn(5, encoder.width, requires_grad=True)
    out = tp.assemble(ctx)
    pre, suf = tp.token_prefix, tp.token_suffix
    for c, n in enumerate(tp.name_lens):
        name, rest = suf[c, :n], suf[c, n:]
        if position == "middle":  # h = floor(M/2) = 2 context tokens before the name
            ref = torch.cat([pre[c], ctx[:2], name, ctx[2:], rest])
        else:
            ref = torch.cat([pre[c], name, ctx, rest])
        assert torch.equal(out[c], ref)
    out.sum().backward()
    assert torch.equal(ctx.grad, torch.full_like(ctx, len(NAMES)))  # every context row used once per class


def test_class_specific_context(encoder):
    tp = TextPrompts(encoder, NAMES, n_ctx=3, position="front")
    ctx = torch.randn(len(NAMES), 3, encoder.width)
    out = tp.assemble(ctx)
    for c, n in enumerate(tp.name_lens):
        assert torch.equal(out[c, 1 + n:1 + n + 3], ctx[c])
