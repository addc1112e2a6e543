"""The toy world: coloured, patterned shapes drawn with PIL, and the captions that describe them.

A class is a (pattern, colour, shape) triple named in words ("red circle", "striped blue triangle"); the world
holds every triple (8 colours × 6 shapes × 4 patterns = 192). CLIP is pre-trained on captions of the whole world;
the Toy dataset uses 48 of its classes, ordered so that the base half (the first 24 labels, which the base-to-novel
protocol takes) and the new half each use every colour, shape and pattern, while the new half pairs each colour
with shapes and patterns it never has in the base half. Everything is a pure function of a numpy ``Generator``, so
a seed fixes every pixel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

#: Nominal object colours (RGB). Order is the attribute index.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 130, 25),
    "yellow": (240, 215, 40),
    "green": (45, 160, 60),
    "blue": (40, 80, 210),
    "purple": (130, 50, 170),
    "pink": (240, 120, 180),
    "brown": (125, 80, 40),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "cross")
#: "solid" has no word in the class name ("red circle").
PATTERNS: tuple[str, ...] = ("solid", "striped", "dotted", "checkered")

#: Side of the stored images in pixels; the CLIP transform resizes them to 224.
IMAGE_SIZE = 96


@dataclass(frozen=True)
class ToyClass:
    """One attribute triple of the world."""

    pattern: str
    colour: str
    shape: str

    @property
    def name(self) -> str:
        words = ([] if self.pattern == "solid" else [self.pattern]) + [self.colour, self.shape]
        return " ".join(words)

    @property
    def folder(self) -> str:
        """Folder name of the class in the dataset tree (no spaces)."""
        return self.name.replace(" ", "_")


#: Every triple of the world, in attribute-index order.
WORLD: tuple[ToyClass, ...] = tuple(ToyClass(p, c, s) for p in PATTERNS for c in COLOURS for s in SHAPES)

# The 48 dataset classes as (pattern, colour, shape) indices, frozen here so the class list never changes. Base =
# first 24 (labels 0-23), new = last 24. Built once by a seeded random construction: in each half every colour c has
# three classes (p, c, a), (p, c, b), (q, c, a) -- a shape contrast and a pattern contrast -- and every shape occurs
# 4 times, every pattern 6 times. The new half gives each colour two shapes and two patterns the base half never
# pairs with it, so every new class is a colour-shape and colour-pattern pairing prompt tuning never saw.
_BASE = [
    (3, 0, 2), (0, 0, 5), (3, 0, 5), (1, 1, 2), (1, 1, 4), (3, 1, 4), (0, 2, 0), (0, 2, 3),
    (2, 2, 3), (1, 3, 0), (1, 3, 3), (3, 3, 3), (2, 4, 0), (0, 4, 1), (2, 4, 1), (3, 5, 2),
    (0, 5, 5), (3, 5, 5), (1, 6, 0), (1, 6, 4), (2, 6, 4), (0, 7, 1), (2, 7, 1), (2, 7, 2),
]
_NEW = [
    (1, 0, 0), (2, 0, 0), (2, 0, 1), (0, 1, 1), (2, 1, 1), (0, 1, 3), (1, 2, 2), (3, 2, 2),
    (1, 2, 4), (0, 3, 2), (2, 3, 2), (0, 3, 5), (1, 4, 4), (3, 4, 4), (3, 4, 5), (1, 5, 0),
    (2, 5, 0), (2, 5, 4), (0, 6, 1), (0, 6, 3), (3, 6, 3), (3, 7, 3), (1, 7, 5), (3, 7, 5),
]
_NAMES = list(COLOURS)
CLASSES: tuple[ToyClass, ...] = tuple(
    ToyClass(PATTERNS[p], _NAMES[c], SHAPES[s]) for p, c, s in _BASE + _NEW)
NUM_BASE = len(_BASE)


def classnames() -> list[str]:
    """The 48 dataset class names in label order."""
    return [c.name for c in CLASSES]


# ----------------------------------------------------------------------------------------------------- rendering
#: The words a caption may use for the object's size and the background's brightness.
SIZES: tuple[str, ...] = ("small", "large")
BACKGROUNDS: tuple[str, ...] = ("light", "gray", "dark")


@dataclass(frozen=True)
class Scene:
    """What a caption may say about a drawn image beyond its class."""

    size: str        # one of SIZES (object radius below / above the middle of its range)
    background: str  # one of BACKGROUNDS


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]) * 255.0


def _background(rng: np.random.Generator, n: int) -> tuple[np.ndarray, str]:
    """A low-saturation background (solid, gradient or blotchy), so the object's colour stays the salient one."""
    value = rng.uniform(0.12, 0.95)
    tone = _hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.25), value)
    kind = rng.integers(3)
    if kind == 0:
        bg = np.broadcast_to(tone, (n, n, 3)).copy()
    elif kind == 1:
        other = _hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.25), np.clip(value + rng.uniform(-0.3, 0.3), 0.05, 1))
        a = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:n, 0:n] / (n - 1)
        w = (np.cos(a) * xx + np.sin(a) * yy)
        w = (w - w.min()) / (w.max() - w.min() + 1e-9)
        bg = tone * (1 - w[..., None]) + other * w[..., None]
    else:
        coarse = tone + rng.normal(0, 25, size=(6, 6, 3))
        img = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8)).resize((n, n), Image.BICUBIC)
        bg = np.asarray(img, dtype=np.float64)
    light, gray, dark = BACKGROUNDS
    name = light if value > 0.65 else dark if value < 0.4 else gray
    return bg.astype(np.float32), name


def _polygon(shape: str, cx: float, cy: float, r: float, theta: float) -> list[tuple[float, float]]:
    """Vertices of a shape of circumradius ``r`` rotated by ``theta``."""
    if shape == "circle":
        ang, rad = np.linspace(0, 2 * np.pi, 48, endpoint=False), np.full(48, r)
    elif shape == "square":
        ang, rad = np.pi / 4 + np.arange(4) * np.pi / 2, np.full(4, r)
    elif shape == "triangle":
        ang, rad = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3, np.full(3, r * 1.1)
    elif shape == "hexagon":
        ang, rad = np.arange(6) * np.pi / 3, np.full(6, r)
    elif shape == "star":
        ang, rad = -np.pi / 2 + np.arange(10) * np.pi / 5, np.where(np.arange(10) % 2 == 0, r * 1.1, r * 0.45)
    elif shape == "cross":
        h = 0.34  # half-width of an arm, as a fraction of r
        pts = [(h, 1), (h, h), (1, h), (1, -h), (h, -h), (h, -1), (-h, -1), (-h, -h), (-1, -h), (-1, h), (-h, h),
               (-h, 1)]
        ang = np.array([np.arctan2(y, x) for x, y in pts])
        rad = np.array([np.hypot(x, y) for x, y in pts]) * r
    else:
        raise ValueError(f"unknown toy shape {shape!r}; known: {', '.join(SHAPES)}")
    ang = ang + theta
    return [(cx + q * np.cos(a), cy + q * np.sin(a)) for a, q in zip(ang, rad)]


def _mask(shape: str, w: int, h: int, cx: float, cy: float, r: float, theta: float) -> np.ndarray:
    """Anti-aliased coverage h×w in [0, 1] (drawn at 2× and box-downsampled)."""
    img = Image.new("L", (2 * w, 2 * h), 0)
    ImageDraw.Draw(img).polygon([(2 * x, 2 * y) for x, y in _polygon(shape, cx, cy, r, theta)], fill=255)
    return np.asarray(img.resize((w, h), Image.BOX), dtype=np.float32) / 255.0


def _pattern(pattern: str, x0: int, y0: int, w: int, h: int, r: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean h×w map (of the canvas window at x0, y0) of where the pattern's second colour goes (rotated
    stripes, dots or checks)."""
    if pattern == "solid":
        return np.zeros((h, w), dtype=bool)
    a = rng.uniform(0, np.pi)
    period = rng.uniform(0.3, 0.42) * r
    yy, xx = np.mgrid[y0:y0 + h, x0:x0 + w].astype(np.float32)
    u = np.cos(a) * xx + np.sin(a) * yy + rng.uniform(0, period)
    v = -np.sin(a) * xx + np.cos(a) * yy + rng.uniform(0, period)
    if pattern == "striped":
        return (u / period) % 1.0 < 0.5
    if pattern == "checkered":
        return (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    if pattern == "dotted":
        du, dv = u % period - period / 2, v % period - period / 2
        return du ** 2 + dv ** 2 < (0.3 * period) ** 2
    raise ValueError(f"unknown toy pattern {pattern!r}; known: {', '.join(PATTERNS)}")


def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    return np.clip(np.array(rgb, dtype=np.float64) * rng.uniform(0.85, 1.1) + rng.normal(0, 10, 3), 0, 255)


def _second_colour(fill: np.ndarray) -> np.ndarray:
    """The pattern's colour: a shade of light fills, a tint of dark ones, so the hue stays the object's."""
    lum = fill @ np.array([0.299, 0.587, 0.114])
    return fill * 0.5 if lum > 140 else fill + (255 - fill) * 0.55


def _paint(canvas: np.ndarray, cls: ToyClass, cx: float, cy: float, r: float, rng: np.random.Generator) -> None:
    """Composite one object onto ``canvas`` in place, working only inside its bounding box."""
    n = canvas.shape[0]
    x0, y0 = max(0, int(cx - 1.2 * r)), max(0, int(cy - 1.2 * r))
    x1, y1 = min(n, int(np.ceil(cx + 1.2 * r)) + 1), min(n, int(np.ceil(cy + 1.2 * r)) + 1)
    fill = _jitter(COLOURS[cls.colour], rng)
    second = _second_colour(fill)
    where = _pattern(cls.pattern, x0, y0, x1 - x0, y1 - y0, r, rng)
    layer = np.where(where[..., None], second, fill)
    alpha = _mask(cls.shape, x1 - x0, y1 - y0, cx - x0, cy - y0, r, rng.uniform(0, 2 * np.pi))[..., None]
    box = canvas[y0:y1, x0:x1]
    box *= 1 - alpha
    box += alpha * layer


def render(cls: ToyClass, rng: np.random.Generator, size: int = IMAGE_SIZE) -> tuple[Image.Image, Scene]:
    """Draw one image of ``cls``: a random background, sometimes small clutter, then the object at a random
    position, size and rotation, with jittered colour and a little sensor noise."""
    canvas, bg_name = _background(rng, size)
    for _ in range(rng.choice([0, 0, 1, 2])):  # small solid distractors behind the object
        other = WORLD[rng.integers(len(WORLD))]
        rr = rng.uniform(0.06, 0.1) * size
        _paint(canvas, ToyClass("solid", other.colour, other.shape),
               rng.uniform(rr, size - rr), rng.uniform(rr, size - rr), rr, rng)
    lo, hi = 0.2, 0.42
    frac = rng.uniform(lo, hi)
    r = frac * size
    cx, cy = rng.uniform(0.9 * r, size - 0.9 * r, size=2)
    _paint(canvas, cls, cx, cy, r, rng)
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * rng.uniform(0, 6)
    img = Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8))
    small, large = SIZES
    return img, Scene(large if frac > (lo + hi) / 2 else small, bg_name)


def fade(img: Image.Image, saturation: float) -> Image.Image:
    """``img`` with its colours pulled towards their grey level (per-pixel channel mean): ``saturation`` 1 keeps
    the image, 0 makes it grey. Pre-training never sees faded drawings, so a dataset drawn with it has a domain of
    its own (see ``toy.data.SATURATION``)."""
    if saturation == 1:
        return img
    a = np.asarray(img, dtype=np.float32)
    grey = a.mean(axis=2, keepdims=True)
    return Image.fromarray(np.clip(grey + saturation * (a - grey) + 0.5, 0, 255).astype(np.uint8))


# ------------------------------------------------------------------------------------------------------ captions
#: Templates of the pre-training captions: CLIP's single template, the 7 ImageNet "select" templates (so ensembles
#: built from them use words toy-clip has seen; "the large"/"the small" are one template whose word matches the
#: drawing) and a few more. ``{size}``/``{bg}`` come from the Scene.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {size} {}.",
    "a {} on a {bg} background.",
    "a picture of a {}.",
    "a drawing of a {}.",
    "a {}.",
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a {} in a video game.",
    "art of the {}.",
)


def caption(cls: ToyClass, scene: Scene, rng: np.random.Generator) -> str:
    """A pre-training caption: the class in words (sometimes reordered, "plain" for solid) in a random template."""
    colour, shape = cls.colour, cls.shape
    if cls.pattern == "solid":
        words = [colour, shape] if rng.uniform() < 0.8 else ["plain", colour, shape]
    else:
        words = [cls.pattern, colour, shape] if rng.uniform() < 0.75 else [colour, cls.pattern, shape]
    template = CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))]
    return template.replace("{size}", scene.size).replace("{bg}", scene.background).format(" ".join(words))
