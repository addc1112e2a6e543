"""The benchmarks behind tools/benchmark.py and tools/device_check.py, as a library (the tools stay thin).

- :mod:`.common`: the random ViT-B/16-shaped backbone, trainers built as train.py builds them, interleaved timing,
  machine and load facts;
- :mod:`.trainer_bench`: one (method, backbone) configuration: steps, --calib overhead, evaluation, feature cache;
- :mod:`.metrics_bench`: the metric set at ImageNet's scale;
- :mod:`.realshape`: ViT-B/16 shapes: the text tower truncated at the EOT against all 77 positions, method steps,
  peak training memory in capped subprocesses, activation checkpointing;
- :mod:`.cache_bench`: the cached evaluation at >= 2,000 test images and where its fixed cost goes;
- :mod:`.report`: the Markdown of docs/performance.md.
"""
