"""One sampler for single-process and multi-process runs, reproducible per epoch."""

from __future__ import annotations

from monai.data import DistributedSampler
from torch.utils.data import Dataset

from monai_iqad.utils.dist import get_rank, get_world_size

__all__ = ["EpochSampler"]


class EpochSampler(DistributedSampler):
    """``monai.data.DistributedSampler`` that also works without ``torch.distributed`` (one replica, rank 0).

    The order of epoch ``e`` is a function of ``seed + e`` only (MONAI's workflows call ``set_epoch`` at every epoch
    start), so a resumed run replays the same batches as an uninterrupted one, and the same config runs unchanged
    under ``torchrun`` (each rank then takes its own shard).

    Args:
        dataset: the dataset to sample.
        shuffle: shuffle at each epoch (training) or keep order (evaluation).
        seed: base seed of the shuffle.
        even_divisible: pad shards to equal length (training); ``False`` for evaluation so that no image is counted
            twice in the metrics.
        drop_last: drop the tail so shards divide evenly (training only).
    """

    def __init__(
        self,
        dataset: Dataset,
        shuffle: bool = True,
        seed: int = 0,
        even_divisible: bool = True,
        drop_last: bool = False,
    ) -> None:
        super().__init__(
            dataset=dataset,
            even_divisible=even_divisible,
            num_replicas=get_world_size(),
            rank=get_rank(),
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
