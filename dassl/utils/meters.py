"""Running averages for the train log line."""
from __future__ import annotations

from collections import defaultdict

__all__ = ["AverageMeter", "MetricMeter"]


class AverageMeter:
    """Current value, sum, count and average (or an exponential moving average)."""

    def __init__(self, ema: bool = False):
        self.ema = ema
        self.reset()

    def reset(self) -> None:
        self.val = 0.0
        self.avg = 0.0
        self.sum = 0.0
        self.count = 0

    def update(self, val, n: int = 1) -> None:
        if hasattr(val, "item"):
            val = val.item()
        self.val = val
        self.sum += val * n
        self.count += n
        if self.ema:
            self.avg = val if self.count == n else self.avg * 0.9 + val * 0.1
        else:
            self.avg = self.sum / self.count


class MetricMeter:
    """A dict of AverageMeters; str gives ``name val (avg)`` pairs."""

    def __init__(self, delimiter: str = " "):
        self.meters: dict[str, AverageMeter] = defaultdict(AverageMeter)
        self.delimiter = delimiter

    def update(self, input_dict) -> None:
        if input_dict is None:
            return
        if not isinstance(input_dict, dict):
            raise TypeError("Input to MetricMeter.update() must be a dictionary")
        for k, v in input_dict.items():
            if v is None:
                continue
            self.meters[k].update(v)

    def __str__(self) -> str:
        return self.delimiter.join(f"{name} {m.val:.4f} ({m.avg:.4f})" for name, m in self.meters.items())
