"""clip.tokenize: OpenAI's framing (SOT, BPE, EOT = argmax, zero padding) and its too-long behaviour."""
import pytest
import torch

import clip
from common.errors import UserError

SOT, EOT = 49406, 49407


def test_format_and_known_ids():
    ids = clip.tokenize("a photo of a cat.")
    assert ids.shape == (1, 77) and ids.dtype == torch.long
    # OpenAI vocabulary: a</w>=320, photo</w>=1125, of</w>=539, cat</w>=2368, .</w>=269
    assert ids[0, :8].tolist() == [SOT, 320, 1125, 539, 320, 2368, 269, EOT]
    assert ids[0, 8:].eq(0).all()
    assert ids.argmax(dim=-1).item() == 7  # EOT is the largest id, so argmax finds it
    assert (clip.SOT_TOKEN, clip.EOT_TOKEN) == (SOT, EOT)


def test_spec_token_counts():
    # docs/method_notes.md#tokenisation: punctuation splits off, '_' splits, each X is one token
    assert clip.tokenize("a type of pet, a photo of a").argmax(-1).item() == 1 + 9
    assert clip.tokenize("basset_hound").argmax(-1).item() == 1 + 4
    x = clip.tokenize("X X X X")[0]
    assert x[1:5].tolist() == [343] * 4 and x[5].item() == EOT


def test_cleaning_and_batch():
    a, b, c, empty = clip.tokenize(["A   Photo &amp; Cat ", "a photo & cat", "a photo cat", ""])
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert empty[:2].tolist() == [SOT, EOT] and empty[2:].eq(0).all()
    assert clip.tokenize([]).shape == (0, 77)


def test_too_long_raises_naming_the_text():
    fits = " ".join(["a"] * 75)  # 75 + SOT + EOT = 77
    assert clip.tokenize(fits)[0, -1].item() == EOT
    text = " ".join(["a"] * 76)
    with pytest.raises(UserError, match=r"78 tokens.*context length 77") as info:
        clip.tokenize(["ok", text])
    assert text in str(info.value)


def test_truncate_forces_eot_last():
    ids = clip.tokenize(" ".join(["photo"] * 100), truncate=True)[0]
    assert ids[0].item() == SOT and ids[-1].item() == EOT
    assert ids[1:-1].eq(1125).all()
    assert ids.argmax().item() == 76


def test_context_length_argument():
    ids = clip.tokenize("a photo", context_length=10)
    assert ids.shape == (1, 10) and ids[0, :4].tolist() == [SOT, 320, 1125, EOT]
    with pytest.raises(UserError):
        clip.tokenize("a photo of a cat", context_length=5)
