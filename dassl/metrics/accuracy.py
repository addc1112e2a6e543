"""Top-k accuracy in percent (Dassl's compute_accuracy)."""
from __future__ import annotations

import torch


def compute_accuracy(output, target, topk=(1,)) -> list[torch.Tensor]:
    """List of 1-element tensors: top-k accuracy ×100 / batch. A tuple/list output uses output[0]."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    maxk = max(topk)
    batch_size = target.size(0)
    _, pred = output.topk(maxk, 1, True, True)
    correct = pred.t().eq(target.view(1, -1).expand_as(pred.t()))
    res = []
    for k in topk:
        correct_k = correct[:k].reshape(-1).float().sum(0, keepdim=True)
        res.append(correct_k.mul_(100.0 / batch_size))
    return res
