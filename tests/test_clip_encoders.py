"""clip.TextEncoder / clip.VisionEncoder: exactly open_clip's encode_* without prompts; deep prompts land in exactly
the intended token positions of exactly the intended layers (checked with hooks on the residual blocks)."""
import pytest
import torch
from open_clip import CLIPTextCfg, CLIPVisionCfg

import clip
import clip.backbones
from common.errors import UserError

M, N_V = 3, 2  # text context rows, visual prompt tokens


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def deep_model():
    """tiny-vit with 4 layers per tower, so depths 1..4 (and the untouched layers after them) can be told apart."""
    return clip.build_clip(64, CLIPVisionCfg(**{**clip.backbones.TINY_VIT, "layers": 4}),
                           CLIPTextCfg(**{**clip.backbones.TINY_TEXT, "layers": 4}), seed=0)


def _images(n=2, seed=0):
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def _params(n, *shape, seed=1):
    return [torch.randn(*shape, generator=torch.Generator().manual_seed(seed + i)) for i in range(n)]


def _capture(blocks):
    """Record every block's input (pre-hook) and output (hook)."""
    inputs, outputs, handles = {}, {}, []
    for i, blk in enumerate(blocks):
        handles.append(blk.register_forward_pre_hook(lambda m, a, i=i: inputs.__setitem__(i, a[0].detach())))
        handles.append(blk.register_forward_hook(lambda m, a, o, i=i: outputs.__setitem__(i, o.detach())))
    return inputs, outputs, handles


# ----------------------------------------------------------------------------------------- no prompts
@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_equal_to_open_clip_without_prompts(name, precision):
    model = clip.load(name, precision=precision)
    text, vision = clip.TextEncoder(model), clip.VisionEncoder(model)
    ids = clip.tokenize(["a photo of a cat.", "a type of pet, a photo of a basset hound."])
    x = _images()
    with torch.no_grad():
        assert torch.equal(text(text.embed(ids), ids.argmax(-1)), model.encode_text(ids))
        assert torch.equal(vision(x), model.encode_image(x.to(vision.dtype)))
        if vision.supports_prompts:  # empty deep prompt lists change nothing
            assert torch.equal(vision(x, None, []), model.encode_image(x.to(vision.dtype)))
    low = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    assert text.dtype == low and vision.dtype == low and text.embed(ids).dtype == low


def test_attributes_and_shared_references():
    vit, rn = clip.load("tiny-vit"), clip.load("tiny-rn")
    text, vision, rn_vision = clip.TextEncoder(vit), clip.VisionEncoder(vit), clip.VisionEncoder(rn)
    assert (text.width, text.output_dim, text.num_layers, text.context_length) == (128, 64, 2, 77)
    assert (vision.width, vision.output_dim, vision.num_layers) == (128, 64, 2)
    assert (rn_vision.width, rn_vision.output_dim, rn_vision.num_layers) == (256, 64, 0)
    assert vision.supports_prompts and not rn_vision.supports_prompts
    # references, not copies: every encoder parameter is a CLIP parameter
    clip_params = {id(p) for p in vit.parameters()}
    assert {id(p) for p in text.parameters()} | {id(p) for p in vision.parameters()} <= clip_params
    assert text.transformer is vit.transformer and vision.visual is vit.visual


# ----------------------------------------------------------------------------------------- text prompts
def test_text_deep_prompts_replace_rows_1_to_m_of_the_intended_blocks(deep_model):
    text = clip.TextEncoder(deep_model)
    ids = clip.tokenize(["X X X cat.", "X X X basset hound."])
    eot = ids.argmax(-1)
    ctx = torch.randn(M, 128)
    prompts = text.embed(ids).clone()
    prompts[:, 1:1 + M] = ctx
    deep = _params(2, M, 128)  # depth J = 3: blocks 1 and 2 get prompts, block 3 does not
    inputs, outputs, handles = _capture(text.transformer.resblocks)
    try:
        with torch.no_grad():
            out = text(prompts, eot, deep)
    finally:
        for h in handles:
            h.remove()
    length = int(eot.max()) + 1  # truncated at the last EOT (MODEL.TEXT_TRUNCATE_EOT)
    assert inputs[0].shape[1] == length
    assert torch.equal(inputs[0], (prompts + text.positional_embedding)[:, :length])  # shallow ctx: positional emb.
    for k, p in enumerate(deep):
        x, prev = inputs[k + 1], outputs[k]
        assert torch.equal(x[:, 1:1 + M], p.expand(2, -1, -1))  # no positional embedding
        assert torch.equal(x[:, :1], prev[:, :1]) and torch.equal(x[:, 1 + M:], prev[:, 1 + M:])
        assert not torch.equal(prev[:, 1:1 + M], x[:, 1:1 + M])
    assert torch.equal(inputs[3], outputs[2])  # beyond the depth: carried forward untouched
    # a None entry skips its layer
    inputs, outputs, handles = _capture(text.transformer.resblocks)
    try:
        with torch.no_grad():
            skipped = text(prompts, eot, [None, deep[1]])
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(inputs[1], outputs[0]) and torch.equal(inputs[2][:, 1:1 + M], deep[1].expand(2, -1, -1))
    assert out.shape == (2, 64) and not torch.allclose(out, skipped)


def test_text_per_sample_deep_prompts_match_shared(deep_model):
    text = clip.TextEncoder(deep_model)
    ids = clip.tokenize(["X X X cat.", "X X X dog."])
    deep = _params(3, M, 128)
    with torch.no_grad():
        shared = text(text.embed(ids), ids.argmax(-1), deep)
        batched = text(text.embed(ids), ids.argmax(-1), [p.expand(2, -1, -1) for p in deep])
    assert torch.equal(shared, batched)


# ----------------------------------------------------------------------------------------- vision prompts
def test_visual_prompts_appended_and_replaced_in_the_intended_blocks(deep_model):
    vision = clip.VisionEncoder(deep_model)
    v = vision.visual
    x = _images()
    shallow = torch.randn(N_V, 128)
    deep = _params(2, N_V, 128)
    seen = []
    h_pre = v.ln_pre.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    try:
        with torch.no_grad():
            plain = vision(x)
        inputs, outputs, handles = _capture(v.transformer.resblocks)
        with torch.no_grad():
            out = vision(x, shallow, deep)
    finally:
        for h in handles + [h_pre]:
            h.remove()
    n_tok = 1 + 49  # class token + 7x7 patches
    unprompted, embedded = seen
    assert embedded.shape == (2, n_tok + N_V, 128)
    assert torch.equal(embedded[:, :n_tok], unprompted)  # class + patches (+ pos. emb.) unchanged
    assert torch.equal(embedded[:, n_tok:], shallow.expand(2, -1, -1))  # appended, no positional embedding
    assert torch.equal(inputs[0], v.ln_pre(embedded))  # prompts pass through ln_pre
    for k, p in enumerate(deep):
        xin, prev = inputs[k + 1], outputs[k]
        assert xin.shape[1] == n_tok + N_V
        assert torch.equal(xin[:, -N_V:], p.expand(2, -1, -1))
        assert torch.equal(xin[:, :-N_V], prev[:, :-N_V])
    assert torch.equal(inputs[3], outputs[2])
    assert out.shape == (2, 64) and not torch.allclose(out, plain)


def test_visual_per_sample_prompts_match_one_by_one(deep_model):
    vision = clip.VisionEncoder(deep_model)
    x = _images(2, seed=3)
    shallow = torch.randn(2, N_V, 128)
    deep = [torch.randn(2, N_V, 128)]
    with torch.no_grad():
        both = vision(x, shallow, deep)
        single = torch.cat([vision(x[i:i + 1], shallow[i], [deep[0][i]]) for i in range(2)])
    assert torch.allclose(both, single, atol=1e-5)


# ----------------------------------------------------------------------------------------- gradients, dtypes
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_prompts_get_gradients_clip_does_not(precision):
    model = clip.load("tiny-vit", precision=precision).requires_grad_(False)
    text, vision = clip.TextEncoder(model), clip.VisionEncoder(model)
    ids = clip.tokenize(["X X X cat.", "X X X dog."])
    ctx = torch.nn.Parameter(torch.randn(M, 128) * 0.02)
    deep_t = torch.nn.Parameter(torch.randn(M, 128) * 0.02)
    vis = torch.nn.Parameter(torch.randn(N_V, 128) * 0.02)
    deep_v = torch.nn.Parameter(torch.randn(N_V, 128) * 0.02)
    emb = text.embed(ids)
    prompts = torch.cat([emb[:, :1], ctx.to(emb.dtype).expand(2, -1, -1), emb[:, 1 + M:]], dim=1)
    t = text(prompts, ids.argmax(-1), [deep_t])
    f = vision(_images(), vis, [deep_v])
    assert t.dtype == f.dtype == text.dtype
    (f.float() @ t.float().T).sum().backward()
    for p in (ctx, deep_t, vis, deep_v):
        assert p.grad is not None and p.grad.dtype == torch.float32 and p.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


# ----------------------------------------------------------------------------------------- errors
def test_user_errors():
    vit, rn = clip.load("tiny-vit"), clip.load("tiny-rn")
    text, vision, rn_vision = clip.TextEncoder(vit), clip.VisionEncoder(vit), clip.VisionEncoder(rn)
    ids = clip.tokenize(["a cat"])
    x = _images(1)
    with pytest.raises(UserError, match="ResNet"):
        rn_vision(x, torch.zeros(N_V, 256))
    with pytest.raises(UserError, match="ResNet"):
        rn_vision(x, None, [torch.zeros(N_V, 256)])
    with pytest.raises(UserError, match=r"prompt depth 3\).* at most 2"):
        text(text.embed(ids), ids.argmax(-1), _params(2, M, 128))
    with pytest.raises(UserError, match="at most 2"):
        vision(x, torch.zeros(N_V, 128), _params(2, N_V, 128))
    with pytest.raises(UserError, match="width 128"):
        text(text.embed(ids), ids.argmax(-1), [torch.zeros(M, 512)])
    with pytest.raises(UserError, match="need first-layer"):
        vision(x, None, [torch.zeros(N_V, 128)])
    with pytest.raises(UserError, match="must match"):
        vision(x, torch.zeros(N_V, 128), [torch.zeros(N_V + 1, 128)])
    with pytest.raises(UserError, match="INPUT.SIZE"):
        vision(torch.zeros(1, 3, 160, 160))
    with pytest.raises(UserError, match=r"\[N, 77, 128\]"):
        text(torch.zeros(1, 76, 128), torch.zeros(1, dtype=torch.long))
    with pytest.raises(UserError, match="open_clip CLIP"):
        clip.TextEncoder(torch.nn.Linear(2, 2))
