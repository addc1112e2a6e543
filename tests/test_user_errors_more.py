"""User mistakes caught at their source: a mistyped path-like backbone name, a context length below 1, a class
name too long for the zero-shot template."""
import pytest

import clip
from common.errors import UserError
from trainers.prompts import TextPrompts
from trainers.templates import zeroshot_text_features


@pytest.fixture(scope="module")
def tiny():
    return clip.load("tiny-vit")


def test_mistyped_openai_name_suggests_the_closest():
    with pytest.raises(UserError, match='Did you mean "ViT-B/16"'):
        clip.load("ViT-B/61")


def test_context_length_below_one(tiny):
    with pytest.raises(UserError, match="at least 1"):
        TextPrompts(clip.TextEncoder(tiny), ["cat"], n_ctx=0)


def test_class_name_too_long_for_template(tiny):
    with pytest.raises(UserError, match="for class 'w w w"):
        zeroshot_text_features(tiny, ["w " * 80], ["a photo of a {}."])
