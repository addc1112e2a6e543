"""A helper module beside a trainer file, as the paper's repository keeps its loss terms in
``trainers/regularizers.py``: the trainer file imports it as ``trainers.regularizers`` (written for the tests)."""
import torch


def margin_terms(logits: torch.Tensor, alpha: float = 0.1, beta: float = 0.01) -> torch.Tensor:
    """``-alpha * mean(m) + beta * var(m)`` of the top-1 logit margin ``m``."""
    top2 = logits.float().topk(2, dim=-1).values
    margin = top2[:, 0] - top2[:, 1]
    return -alpha * margin.mean() + beta * margin.var(unbiased=False)
