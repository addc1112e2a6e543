"""build_sampler: only torch's RandomSampler and SequentialSampler are needed by prompt tuning."""
from __future__ import annotations

from torch.utils.data import RandomSampler, SequentialSampler

from common.suggest import check_availability

AVAI_SAMPLERS = ["RandomSampler", "SequentialSampler"]


def build_sampler(sampler_type, cfg=None, data_source=None, batch_size=32, n_domain=0, n_ins=2, generator=None):
    """Sampler over ``data_source``; the domain/class samplers of Dassl are not implemented.

    ``generator`` (a seeded torch.Generator) makes the RandomSampler's order depend on the run seed only.
    """
    check_availability(sampler_type, AVAI_SAMPLERS, what="sampler (DATALOADER.*.SAMPLER)")
    if sampler_type == "RandomSampler":
        return RandomSampler(data_source, generator=generator)
    return SequentialSampler(data_source)
