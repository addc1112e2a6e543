"""CUDA checks (marker ``cuda``; skipped without a GPU; tools/device_check.py runs them): the text tower's truncation
at the EOT on the GPU, in fp32 and in the configs' fp16, its step, and the memory it saves."""
from __future__ import annotations

import pytest
import torch

import clip
from trainers.prompts import TextPrompts

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (tools/device_check.py)")]

NAMES = ["cat", "basset hound", "a very long class name of many words", "dog"]


def rel(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


def _encode(precision: str, truncate: bool, grad: bool = False):
    model = clip.load("tiny-vit", device="cuda", precision=precision)
    enc = clip.TextEncoder(model)
    enc.truncate_eot = truncate
    prompts = TextPrompts(enc, NAMES, 4)
    ctx = (torch.randn(4, enc.width, generator=torch.Generator().manual_seed(0)) * 0.02).cuda().requires_grad_(grad)
    out = enc(prompts.assemble(ctx), prompts.eot_idx.cuda())
    return out, ctx


@pytest.mark.parametrize("precision,bound", [("fp32", 1e-5), ("fp16", 4e-3)])
def test_truncation_on_cuda_within_the_bound(precision, bound):
    cut, ctx_c = _encode(precision, True, grad=True)
    full, ctx_f = _encode(precision, False, grad=True)
    assert rel(cut.float(), full.float()) <= bound
    g_c, = torch.autograd.grad(cut.float().square().sum(), ctx_c)
    g_f, = torch.autograd.grad(full.float().square().sum(), ctx_f)
    assert rel(g_c, g_f) <= 10 * bound


def test_truncation_saves_cuda_memory():
    peaks = {}
    for truncate in (False, True):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out, ctx = _encode("fp32", truncate, grad=True)
        out.square().sum().backward()
        torch.cuda.synchronize()
        peaks[truncate] = torch.cuda.max_memory_allocated() - base
    assert peaks[True] < 0.6 * peaks[False], peaks


def test_checkpointed_tower_on_cuda_is_exact():
    model = clip.load("tiny-vit", device="cuda")
    enc = clip.TextEncoder(model)
    prompts = TextPrompts(enc, NAMES, 4)
    ctx = (torch.randn(4, enc.width) * 0.02).cuda().requires_grad_(True)
    ref = enc(prompts.assemble(ctx), prompts.eot_idx.cuda())
    g_ref, = torch.autograd.grad(ref.square().sum(), ctx)
    enc.checkpoint_chunk = 2
    out = enc(prompts.assemble(ctx), prompts.eot_idx.cuda())
    g_out, = torch.autograd.grad(out.square().sum(), ctx)
    assert rel(out, ref) <= 1e-6 and rel(g_out, g_ref) <= 1e-6
