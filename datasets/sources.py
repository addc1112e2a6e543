"""Where each benchmark dataset's files come from, and the checksum each must have (tools/prepare_data.py).

Every checksum here is published by someone other than us, named beside it; a file with none that can be cited is
a manual step (``Plan.manual``), never an unverified download. The canonical CoOp split files are accepted by
their file sha256 (the Caltech101 file circulates with and without a trailing newline) or by the sha256 of their
parsed content (``datasets.common.canonical_sha256``), which any re-formatting keeps.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .download import GDRIVE, Fetch, extract

KNOWN_FILES: dict[str, tuple[frozenset[str], str]] = {
    "split_zhou_Caltech101.json": (frozenset({
        "43ab95e88d2f6a32a11c4f8dc9f822c534e822f3dbbde2e248af5432d771a6fc",
        "52ce83205ff8ff8a1a18119aad6376120ae35c36e783a984bc560cbf10e73fa5"}),
        "266b016abdaeeb65436a3273abb64b9c02633d8d97988b66592f0fd28b2659a4"),
    "split_zhou_OxfordPets.json": (frozenset({"d7f3ffe65b3919f95132e51422894ae18686b83c331fd8c0adcdc3dc2de6301e"}),
                                   "175852640a3b1e8d7441c6224786fd018b4d6bcdd60f4495edca8a185631729d"),
    "split_zhou_StanfordCars.json": (frozenset({"40acee7aa65c8e4727a32d90e884b7c3f8960b523422317e163f7af65432959d"}),
                                     "bffbe347fbf93ad532133ff506d15606ac007812cfac9933551a5877f5263dd3"),
    "split_zhou_OxfordFlowers.json": (frozenset({"2f50c42fc1a17ca13c271cb4269b1347bdb43d2be672e34f74a4e4cbfbcca794"}),
                                      "9bf82a401539357a181e5f0b836ae7fcd5baa38b55e264a2059df8e86adc898a"),
    "split_zhou_DescribableTextures.json": (
        frozenset({"f26ebeccd2b58e68d70f07a0dc39fe49bf7b69024bac34396b954dfd87969c38"}),
        "0d04a9bb08938c9d435fc3c6b5030906334f6d8ccf4d80f8319e5d7f4fbdd4ba"),
    "split_zhou_EuroSAT.json": (frozenset({"541503a77d0b26b735d85ec7a3e672804fe0aa466c2e5f07da772cc6c0af8ad2"}),
                                "b9db23fedd13a2d3374107fe494f4fa814e7837c771660c850aab95ec391ad1a"),
    "split_zhou_UCF101.json": (frozenset({"d78cb834f7c5792ceaff2c5ee2d7c76a9e4086e48a3a6b01232989d29cbefdd8"}),
                               "29a5dc239824943e473244fc18abf1b43734213fc748cffa25ccd773fbe7271a"),
    "cat_to_name.json": (frozenset({"0469f1ad7fe0072d98155c49aa58649d998edbbe3326229003aa5f7228525236"}),
                         "7bc4809e32737f46c37917667cd62dc25bc634c8feb6f2d693199549fa7fd69b"),
}

# Files of CoOp's Google Drive with no published checksum: named in the manual steps, not downloaded.
UNVERIFIED = {
    "classnames.txt": "1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF",
    "split_zhou_Food101.json": "1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl",
    "split_zhou_SUN397.json": "1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq",
    "UCF-101-midframes.zip": "10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O",
}


@dataclass(frozen=True)
class Plan:
    fetches: tuple[Fetch, ...] = ()
    manual: str = ""  # what the user must do by hand (files that cannot be downloaded and verified here)


def by_hand(name: str, folder: str) -> str:
    """The manual step for an :data:`UNVERIFIED` file."""
    return (f"{name} has no published checksum, so it is not downloaded here: get it from CoOp's Google Drive "
            f"(https://drive.google.com/uc?id={UNVERIFIED[name]}) and put it in {folder}/")


def _caltech_inner(dataset_path: Path) -> None:
    """caltech-101.zip holds 101_ObjectCategories.tar.gz: extract it too."""
    inner = dataset_path / "101_ObjectCategories.tar.gz"
    if inner.is_file():
        extract(inner, dataset_path)
        inner.unlink()


def _eurosat_rename(dataset_path: Path) -> None:
    """Newer EuroSAT archives unpack as EuroSAT_RGB/; the canonical layout is 2750/."""
    rgb, canonical = dataset_path / "EuroSAT_RGB", dataset_path / "2750"
    if rgb.is_dir() and not canonical.exists():
        rgb.rename(canonical)


def _split(name: str, gdrive_id: str) -> Fetch:
    accepted, content = KNOWN_FILES[name]
    return Fetch(dest=name, sources=(GDRIVE + gdrive_id,), accepted=accepted, content_sha256=content, done=name)


VGG = "https://www.robots.ox.ac.uk/~vgg/data"
# md5s of torchvision's dataset classes (torchvision/datasets/{caltech,oxford_iiit_pet,flowers102,food101,dtd,
# eurosat,sun397}.py); FGVC-Aircraft's from mlverse/torchvision (R/dataset-fgvc.R); ImageNet-A and -R from
# ENSTA-U2IS-AI/torch-uncertainty (torch_uncertainty/datasets/classification/imagenet/imagenet_{a,r}.py);
# ImageNetV2's sha256 from tensorflow/datasets (tensorflow_datasets/datasets/imagenet_v2/checksums.tsv).
PLANS: dict[str, Plan] = {
    "ImageNet": Plan(
        manual="ImageNet images need a licence: download ILSVRC2012 train and val from https://image-net.org, "
               "extract them as imagenet/images/train/<wnid>/ and imagenet/images/val/<wnid>/ (sort val into "
               "wnid folders, e.g. with valprep.sh); " + by_hand("classnames.txt", "imagenet")),
    "Caltech101": Plan((
        _split("split_zhou_Caltech101.json", "1hyarUivQE36mY6jSomru6Fjd-JzwcCzN"),
        Fetch("caltech-101.zip", ("https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",),
              md5="3138e1922a9193bfa496528edbbc45d0", done="101_ObjectCategories", strip="caltech-101",
              then=_caltech_inner),
    )),
    "OxfordPets": Plan((
        _split("split_zhou_OxfordPets.json", "1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs"),
        Fetch("images.tar.gz", (f"{VGG}/pets/data/images.tar.gz",), md5="5c4f3ee8e5d25df40f4fd59a7f44e54c",
              done="images"),
        Fetch("annotations.tar.gz", (f"{VGG}/pets/data/annotations.tar.gz",),
              md5="95a8c909bbe2e81eed6a22bccdf3f68f", done="annotations"),
    )),
    "StanfordCars": Plan(
        (_split("split_zhou_StanfordCars.json", "1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT"),),
        manual="Stanford Cars images: the original host is gone; put cars_train/ and cars_test/ from your own copy "
               "(e.g. a Kaggle mirror of the dataset) into stanford_cars/"),
    "OxfordFlowers": Plan((
        _split("split_zhou_OxfordFlowers.json", "1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT"),
        _split("cat_to_name.json", "1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0"),
        Fetch("102flowers.tgz", (f"{VGG}/flowers/102/102flowers.tgz",), md5="52808999861908f626f3c1f4e79d11fa",
              done="jpg"),
        Fetch("imagelabels.mat", (f"{VGG}/flowers/102/imagelabels.mat",), md5="e0620be6f572b9609742df49c70aed4d",
              done="imagelabels.mat"),
    )),
    "Food101": Plan((
        Fetch("food-101.tar.gz", ("http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",),
              md5="85eeb15f3717b99a5da872d97d918f87", done="images", strip="food-101"),
    ), manual=by_hand("split_zhou_Food101.json", "food-101")),
    "FGVCAircraft": Plan((
        Fetch("fgvc-aircraft-2013b.tar.gz", (f"{VGG}/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",),
              md5="d4acdd33327262359767eeaa97a4f732", done="images_variant_test.txt",
              strip="fgvc-aircraft-2013b/data"),
    )),
    "SUN397": Plan((
        # Princeton's host answers 404 since 2025 and the MIT mirror is gone (pytorch/vision#9348,
        # KaiyangZhou/CoOp#90); kept in case it returns. No other host publishes a direct URL for these bytes.
        Fetch("SUN397.tar.gz", ("http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",),
              md5="8ca2778205c41d23104230ba66911c7a", done="SUN397",
              manual="OpenDataLab hosts the raw archive (https://opendatalab.com/OpenDataLab/SUN397, folder raw/)"),
    ), manual=by_hand("split_zhou_SUN397.json", "sun397")),
    "DescribableTextures": Plan((
        _split("split_zhou_DescribableTextures.json", "1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x"),
        Fetch("dtd-r1.0.1.tar.gz", (f"{VGG}/dtd/download/dtd-r1.0.1.tar.gz",), md5="fff73e5086ae6bdbea199a49dfb8a4c1",
              done="images", strip="dtd"),
    )),
    "EuroSAT": Plan((
        _split("split_zhou_EuroSAT.json", "1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o"),
        Fetch("EuroSAT.zip", ("https://huggingface.co/datasets/torchgeo/eurosat/resolve/"
                              "c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip",),
              md5="c8fa014336c82ac7804f0398fcb19387", done="2750", then=_eurosat_rename),
    )),
    "UCF101": Plan(
        (_split("split_zhou_UCF101.json", "1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y"),),
        manual=by_hand("UCF-101-midframes.zip", "ucf101") + " (extract it there: ucf101/UCF-101-midframes/)"),
    "ImageNetV2": Plan((
        Fetch("imagenetv2-matched-frequency.tar.gz", ("https://huggingface.co/datasets/vaishaal/ImageNetV2/"
              "resolve/main/imagenetv2-matched-frequency.tar.gz",),
              sha256="f0c37fdf925916b19ea1323cd9a2208cdb6959ba2c32eef2a7fc393835c9ca7c",
              done="imagenetv2-matched-frequency-format-val"),
    ), manual=by_hand("classnames.txt", "imagenetv2")),
    "ImageNetSketch": Plan(
        manual="ImageNet-Sketch images: get ImageNet-Sketch.zip (https://github.com/HaohanWang/ImageNet-Sketch) "
               "and extract it so that imagenet-sketch/images/<wnid>/ (or sketch/<wnid>/) holds the images; "
               + by_hand("classnames.txt", "imagenet-sketch")),
    "ImageNetA": Plan((
        Fetch("imagenet-a.tar", ("https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar",),
              md5="c3e55429088dc681f30d81f4726b6595", done="imagenet-a"),
    ), manual=by_hand("classnames.txt", "imagenet-adversarial")),
    "ImageNetR": Plan((
        Fetch("imagenet-r.tar", ("https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar",),
              md5="a61312130a589d0ca1a8fca1f2bd3337", done="imagenet-r"),
    ), manual=by_hand("classnames.txt", "imagenet-rendition")),
}
