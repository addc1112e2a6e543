"""`clip.load`: one entry point for OpenAI names, open_clip `ARCH:PRETRAINED` pairs, local files and named
local backbones (docs/architecture.md §1).

Local files are read in OpenAI's layout (the keys open_clip's CLIP also uses) and the architecture is inferred
from the tensor shapes with OpenAI's conventions (QuickGELU, 64-dim heads); open_clip checkpoints of other
architectures are named `ARCH:/path/to/file`. Nothing is downloaded until every local place has been looked at;
when the weights are nowhere, one UserError names every place and how to provide the file. (Offline,
open_clip's Hugging Face client retries for about a minute before giving up; HF_HUB_OFFLINE=1 skips that.)
"""
from __future__ import annotations

import os
import warnings
import zipfile
from typing import Dict, List, Mapping, Optional, Tuple, Union

import open_clip
import open_clip.pretrained
import torch
from open_clip.constants import HF_WEIGHTS_NAME
from open_clip.model import CLIP

from common.errors import MissingFileError, UserError
from common.suggest import check_availability, did_you_mean

from .backbones import backbone_names, get_backbone
from .build import build_clip, check_precision, config_from_state_dict, open_clip_precision
from .model import openai_compatible

# OpenAI name -> (open_clip architecture, file name OpenAI's loader saves under ~/.cache/clip)
OPENAI_MODELS: Dict[str, Tuple[str, str]] = {
    "RN50": ("RN50", "RN50.pt"),
    "RN101": ("RN101", "RN101.pt"),
    "RN50x4": ("RN50x4", "RN50x4.pt"),
    "RN50x16": ("RN50x16", "RN50x16.pt"),
    "RN50x64": ("RN50x64", "RN50x64.pt"),
    "ViT-B/32": ("ViT-B-32", "ViT-B-32.pt"),
    "ViT-B/16": ("ViT-B-16", "ViT-B-16.pt"),
    "ViT-L/14": ("ViT-L-14", "ViT-L-14.pt"),
    "ViT-L/14@336px": ("ViT-L-14-336", "ViT-L-14-336px.pt"),
}
OPENAI_CACHE = "~/.cache/clip"  # where OpenAI's clip.load (and every CoOp-family repository) keeps its files
WEIGHT_DIR_VARS = ("CLIP_WEIGHTS", "CLIP_CACHE_DIR")  # extra directories holding OpenAI files
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".tar", ".safetensors", ".ckpt")


def available_models() -> List[str]:
    """OpenAI names and named local backbones (open_clip pairs: see `open_clip.list_pretrained()`)."""
    return list(OPENAI_MODELS) + backbone_names()


def load(name_or_path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
         precision: str = "fp32", jit: bool = False, seed: int = 0,
         cache_dir: Optional[str] = None) -> CLIP:
    """Return an open_clip `CLIP` in eval mode on `device`, cast per `precision` ("fp32", "fp16", "bf16", "amp"),
    with OpenAI's attribute semantics (`clip.model.openai_compatible`: `dtype`, `encode_image` casting, a
    sequence-first `transformer` with its causal mask, `visual.input_resolution`).

    `seed` fixes the random init of named local backbones only; the global torch RNG is never consumed.
    `jit` exists for OpenAI's signature: the prompt encoders need the module structure, so only False works.
    """
    check_precision(precision)
    if jit:
        raise UserError("clip.load(jit=True) is not supported: prompt learning needs the eager module "
                        "structure. Use jit=False (OpenAI JIT archives are still read, as weights).")
    name = os.fspath(name_or_path)
    builder = get_backbone(name)
    if builder is not None:
        with torch.random.fork_rng(devices=[]):  # even a careless builder cannot shift the run's RNG
            model = builder(device, precision, seed)
        return _checked(model, name).to(device).eval()
    if name in OPENAI_MODELS:
        return _load_file(_openai_file(name, cache_dir), device, precision)
    path = os.path.expanduser(name)
    if os.path.isfile(path):
        return _load_file(path, device, precision)
    arch, sep, pretrained = name.partition(":")
    if sep and arch in open_clip.list_models():
        return _load_pair(arch, pretrained, device, precision, cache_dir)
    if os.sep in name or name.endswith(_CHECKPOINT_SUFFIXES):
        raise MissingFileError(f"CLIP weights file {path!r} does not exist. Check the path "
                               f"(MODEL.BACKBONE.NAME).{did_you_mean(name, available_models())}")
    if sep:
        check_availability(arch, open_clip.list_models(), what="open_clip architecture (in ARCH:PRETRAINED)")
    check_availability(name, available_models(), what="CLIP backbone (MODEL.BACKBONE.NAME)")
    raise AssertionError("unreachable")


def _checked(model, source: str) -> CLIP:
    if not isinstance(model, CLIP):
        raise UserError(f"{source!r} builds a {type(model).__name__}, not an open_clip CLIP; the prompt "
                        f"encoders (clip.TextEncoder/VisionEncoder) support only the CLIP class.")
    return openai_compatible(model)


# ------------------------------------------------------------------------------------------- OpenAI names
def _openai_file(name: str, cache_dir: Optional[str]) -> str:
    """Path of the weights of OpenAI model `name`: local places first, then open_clip's cache/download."""
    arch, filename = OPENAI_MODELS[name]
    looked: List[str] = []
    places: List[Tuple[str, Optional[str]]] = [("cache_dir argument", cache_dir)]
    places += [(f"${var}", os.environ.get(var)) for var in WEIGHT_DIR_VARS]
    places.append(("OpenAI's cache", OPENAI_CACHE))
    for label, directory in places:
        if not directory:
            looked.append(f"{label}: not set")
            continue
        candidate = os.path.join(os.path.expanduser(directory), filename)
        if os.path.isfile(candidate):
            return candidate
        looked.append(f"{label}: {candidate} (not found)")
    cfg = open_clip.pretrained.get_pretrained_cfg(arch, "openai")
    sources = " or ".join(s for s in (_hf_url(cfg), cfg.get("url")) if s)
    return _fetch(cfg, cache_dir, what=f"CLIP {name} (open_clip '{arch}:openai')", looked=looked,
                  fix=f"download {sources} and save it as {os.path.join(OPENAI_CACHE, filename)} (or as "
                      f"{filename} in ${WEIGHT_DIR_VARS[0]} or cache_dir), or give the file's path as the "
                      f"backbone name")


def _hf_url(cfg: Mapping) -> str:
    """Direct URL of a pretrained cfg's Hugging Face file ('org/repo/' means open_clip's default file name)."""
    hub = cfg.get("hf_hub", "")
    if not hub:
        return ""
    repo, filename = os.path.split(hub)
    return f"https://huggingface.co/{repo}/resolve/main/{filename or HF_WEIGHTS_NAME}"


def _fetch(cfg: Mapping, cache_dir: Optional[str], what: str, looked: List[str], fix: str) -> str:
    """open_clip's own cache lookup / download of a pretrained cfg; UserError listing `looked` if it fails."""
    try:
        path = open_clip.pretrained.download_pretrained(dict(cfg), cache_dir=cache_dir)
        if path and os.path.isfile(path):
            return path
        error = "no file returned"
    except Exception as e:  # network, hub or checksum failures all mean "not available"
        error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    sources = "; ".join(s for s in (_hf_url(cfg), cfg.get("url", "")) if s) or "no source"
    cache = cache_dir or "the Hugging Face cache ($HF_HOME) and ~/.cache/clip"
    looked = looked + [f"open_clip's cache ({cache}) and download ({sources}): {error}"]
    raise UserError(f"Weights for {what} are not on disk and could not be downloaded. Looked at:\n  - "
                    + "\n  - ".join(looked) + f"\nTo fix: {fix}.")


# ------------------------------------------------------------------------------------------- local files
def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The CLIP state dict inside `path`: an OpenAI JIT archive, a plain or wrapped (`state_dict`,
    `module.` prefix) torch checkpoint, or a .safetensors file. Non-weight entries are dropped."""
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file  # optional; open_clip only produces these when installed
            obj = load_file(path, device="cpu")
        elif _is_torchscript(path):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated, still reads
                obj = torch.jit.load(path, map_location="cpu").state_dict()
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"Cannot read CLIP weights from {path!r}: {type(e).__name__}: {e}. Expected an OpenAI "
                        f"checkpoint (e.g. ~/.cache/clip/ViT-B-16.pt), a torch state dict or an open_clip "
                        f"checkpoint.") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise UserError(f"{path!r} holds no state dict (found {type(obj).__name__}).")
    sd = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    # OpenAI's non-weight entries, and the causal mask scripted open_clip models store (rebuilt on construction)
    for key in ("input_resolution", "context_length", "vocab_size", "attn_mask"):
        sd.pop(key, None)
    return sd


def _is_torchscript(path: str) -> bool:
    """TorchScript archives are zip files with a constants.pkl (torch.save zips have none)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n == "constants.pkl" or n.endswith("/constants.pkl") for n in z.namelist())


def _load_file(path: str, device, precision: str) -> CLIP:
    sd = read_state_dict(path)
    embed_dim, vision_cfg, text_cfg = config_from_state_dict(sd, source=path)
    return openai_compatible(build_clip(embed_dim, vision_cfg, text_cfg, device=device, precision=precision,
                                        state_dict=sd, quick_gelu=True, source=path))


# ------------------------------------------------------------------------------------------- open_clip pairs
def _load_pair(arch: str, pretrained: str, device, precision: str, cache_dir: Optional[str]) -> CLIP:
    """`ARCH:TAG` (a tag of open_clip.list_pretrained()) or `ARCH:/path/to/checkpoint`."""
    base = arch[: -len("-quickgelu")] if arch.endswith("-quickgelu") else arch
    if pretrained.lower() == "openai":  # same files as the OpenAI names, same lookup and QuickGELU build
        name = next((n for n, (a, _) in OPENAI_MODELS.items() if a == base), None)
        if name is not None:
            return _load_file(_openai_file(name, cache_dir), device, precision)
    path = os.path.expanduser(pretrained)
    extra = {}
    if os.path.isfile(path):
        checkpoint = path
    elif open_clip.pretrained.is_pretrained_cfg(arch, pretrained):
        cfg = open_clip.pretrained.get_pretrained_cfg(arch, pretrained)
        source = _hf_url(cfg) or cfg.get("url") or "the file"
        checkpoint = _fetch(cfg, cache_dir, what=f"open_clip '{arch}:{pretrained}'", looked=[],
                            fix=f"download {source} and name it as '{arch}:/path/to/file'")
        extra = dict(force_quick_gelu=bool(cfg.get("quick_gelu")),  # weights trained with QuickGELU need it
                     force_preprocess_cfg={k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode")
                                           if k in cfg})
    elif os.sep in pretrained or pretrained.endswith(_CHECKPOINT_SUFFIXES):
        raise MissingFileError(f"open_clip checkpoint {path!r} (in '{arch}:{pretrained}') does not exist.")
    else:
        check_availability(pretrained, open_clip.pretrained.list_pretrained_tags_by_model(arch),
                           what=f"pretrained tag of open_clip '{arch}' (or a checkpoint path)")
        raise AssertionError("unreachable")
    with torch.random.fork_rng(devices=[]):
        try:
            model = open_clip.create_model(arch, pretrained=checkpoint, precision=open_clip_precision(precision),
                                           device=device, cache_dir=cache_dir, **extra)
        except RuntimeError as e:
            raise UserError(f"open_clip could not load '{arch}' weights from {checkpoint!r}: {e}") from None
    return _checked(model, f"{arch}:{pretrained}").eval()
