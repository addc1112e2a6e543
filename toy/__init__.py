"""The toy world: a procedurally drawn image-text world and ``toy-clip``, a small CLIP pre-trained on it, so the
whole pipeline runs on a CPU with no download (see toy/README.md).

Modules: ``world`` (classes, drawing, captions), ``data`` (the Toy dataset tree), ``zeroshot`` (single-template
zero-shot accuracy), ``backbone`` (the model, its checkpoint; importing it registers ``toy-clip`` with ``clip``),
``pretrain`` (contrastive pre-training). Nothing heavy is imported here.
"""
