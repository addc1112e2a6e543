"""dassl.config: the default tree and the yacs merge/type rules the configs rely on
(docs/engine_api.md#yacs-type-rules)."""
import pytest
from yacs.config import CfgNode as CN

from dassl.config import flatten_cfg, get_cfg_default


def test_defaults_and_our_keys():
    cfg = get_cfg_default()
    assert cfg.INPUT.SIZE == (224, 224) and cfg.INPUT.RRCROP_SCALE == (0.08, 1.0)
    assert cfg.OPTIM.NAME == "adam" and cfg.OPTIM.LR == 0.0003 and cfg.OPTIM.STEPSIZE == (-1,)
    assert cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 32 and cfg.DATALOADER.TEST.SAMPLER == "SequentialSampler"
    assert cfg.TEST.FINAL_MODEL == "last_step" and cfg.SEED == -1 and cfg.OUTPUT_DIR == "./output"
    assert cfg.DATALOADER.SKIP_BAD_IMAGES is False and cfg.DATALOADER.PIN_MEMORY is True
    assert cfg.DATALOADER.PERSISTENT_WORKERS is True
    assert cfg.TEST.ECE_BINS == 10 and cfg.TRAIN.PROGRESS_BAR is False


def test_get_cfg_default_returns_a_clone():
    a = get_cfg_default()
    a.OPTIM.LR = 1.0
    a.freeze()
    assert get_cfg_default().OPTIM.LR == 0.0003
    assert not get_cfg_default().is_frozen()


def test_merge_order_file_then_file_then_opts(tmp_path):
    cfg = get_cfg_default()
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"  # what train.py's extend_cfg adds
    ds = tmp_path / "ds.yaml"
    ds.write_text("DATASET:\n  NAME: \"OxfordPets\"\nOPTIM:\n  LR: 0.1\n")
    tr = tmp_path / "tr.yaml"
    tr.write_text(
        "INPUT:\n  SIZE: (224, 224)\n  TRANSFORMS: [\"random_resized_crop\", \"random_flip\", \"normalize\"]\n"
        "OPTIM:\n  NAME: \"sgd\"\n  LR: 0.0035\n  WARMUP_CONS_LR: 1e-5\n  MAX_EPOCH: 5\n"
    )
    cfg.merge_from_file(str(ds))
    cfg.merge_from_file(str(tr))
    cfg.merge_from_list(["OPTIM.MAX_EPOCH", "2", "DATASET.SUBSAMPLE_CLASSES", "base", "MODEL.BACKBONE.NAME",
                         "ViT-B/16"])
    cfg.freeze()
    assert cfg.DATASET.NAME == "OxfordPets"
    assert cfg.OPTIM.LR == 0.0035  # later file wins
    assert cfg.OPTIM.WARMUP_CONS_LR == 1e-5 and isinstance(cfg.OPTIM.WARMUP_CONS_LR, float)  # "1e-5" literal-eval'd
    assert cfg.OPTIM.MAX_EPOCH == 2  # opts have the final word
    assert cfg.INPUT.TRANSFORMS == ("random_resized_crop", "random_flip", "normalize")  # list -> tuple
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "base" and cfg.MODEL.BACKBONE.NAME == "ViT-B/16"


def test_type_rules():
    cfg = get_cfg_default()
    with pytest.raises(ValueError):
        cfg.merge_from_list(["OPTIM.LR", "1"])  # int -> float rejected
    cfg.merge_from_list(["OPTIM.LR", "1.0"])
    assert cfg.OPTIM.LR == 1.0
    cfg.merge_from_list(["INPUT.PIXEL_MEAN", "(0.5, 0.5, 0.5)"])  # tuple -> list coerced
    assert cfg.INPUT.PIXEL_MEAN == [0.5, 0.5, 0.5]
    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.CTX_INIT = ""
    with pytest.raises(ValueError):
        cfg.merge_from_list(["TRAINER.COOP.CTX_INIT", "True"])  # str <- bool rejected


def test_unknown_keys_fail(tmp_path):
    cfg = get_cfg_default()
    with pytest.raises(AssertionError, match="Non-existent key"):
        cfg.merge_from_list(["OPTIM.NOPE", "1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("LOSS:\n  NAME: prograd\n")
    with pytest.raises(KeyError):
        cfg.merge_from_file(str(bad))


def test_each_config_key_is_declared_in_one_place():
    """The engine's tree, the datasets' keys, TRAINER.CALIB, the trainers' LOSS/MODEL.TEXT_*/TEST keys, the methods' sections and
    train.py's CONFIG_NAME: no key in two of them, and together they are exactly the config a run gets."""
    import train
    from calibration.regularizers import CALIB_DEFAULTS
    from datasets.common import DATASET_DEFAULTS
    from dassl.engine import TRAINER_REGISTRY
    from trainers.config import LOSS_DEFAULTS, MODEL_DEFAULTS, TEST_DEFAULTS

    cfg = get_cfg_default()
    train.extend_cfg(cfg)
    methods = set()
    for name in TRAINER_REGISTRY.registered_names():
        cls = TRAINER_REGISTRY.get(name)
        if getattr(cls, "cfg_node", None) and getattr(cls, "cfg_defaults", None) is not None:
            methods |= {f"TRAINER.{cls.cfg_node}.{k}" for k in cls.cfg_defaults}
    owners = {
        "engine": set(flatten_cfg(get_cfg_default())),
        "datasets": {f"DATASET.{k}" for k in DATASET_DEFAULTS},
        "calibration": {f"TRAINER.CALIB.{k}" for k in CALIB_DEFAULTS},
        "trainers": ({f"LOSS.{k}" for k in LOSS_DEFAULTS} | {f"MODEL.{k}" for k in MODEL_DEFAULTS}
                     | {f"TEST.{k}" for k in TEST_DEFAULTS}),
        "methods": methods,
        "train.py": {"CONFIG_NAME"},
    }
    seen: dict[str, str] = {}
    for owner, keys in owners.items():
        for key in keys:
            assert key not in seen, f"{key} is declared by both {seen[key]} and {owner}"
            seen[key] = owner
    assert set(seen) == set(flatten_cfg(cfg))
