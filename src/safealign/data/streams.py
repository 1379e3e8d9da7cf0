"""Endless, resumable batch streams.

A stream reshuffles its examples every epoch with a generator seeded by (seed, epoch), so its position is
two integers and a resumed run sees exactly the batches an uninterrupted one would. With `weights` an epoch
is instead len(features) draws with replacement, P(i) ∝ weights[i], from the same seeded generator.
With several processes each takes its slice of the same global batch (rank r of W gets rows r, r+W, ...),
so W processes with batch b see the batches one process with batch W*b would.
"""

from __future__ import annotations

import math

import torch

from safealign.data.formats import collate


class BatchStream:
    def __init__(self, features: list[dict], batch_size: int, pad_id: int, seed: int, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1, collate_fn=collate, weights: list[float] | None = None):
        if not features:
            raise ValueError("a batch stream needs at least one example")
        self.features = features
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.collate_fn = collate_fn
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.weights = None if weights is None else torch.tensor(weights, dtype=torch.float64)
        self.epoch = 0
        self.position = 0  # global batches already taken in this epoch
        self.tokens_seen = 0  # this process's non-padding tokens, for tokens/s
        self._order = self.epoch_order(self.epoch)

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.features) / self.global_batch)

    @property
    def epoch_float(self) -> float:
        return self.epoch + self.position / self.batches_per_epoch

    def epoch_order(self, epoch: int) -> list[int]:
        n = len(self.features)
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        if self.weights is not None:
            return torch.multinomial(self.weights, n, replacement=True, generator=g).tolist()
        if not self.shuffle:
            return list(range(n))
        return torch.randperm(n, generator=g).tolist()

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.position >= self.batches_per_epoch:
            self.epoch += 1
            self.position = 0
            self._order = self.epoch_order(self.epoch)
        start = self.position * self.global_batch
        window = self._order[start:start + self.global_batch]
        mine = window[self.rank::self.world_size] or window[:1]  # a short last batch still gives each rank a row
        self.position += 1
        batch = self.collate_fn([self.features[i] for i in mine], self.pad_id)
        self.tokens_seen += int(batch["attention_mask"].sum())
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "tokens_seen": self.tokens_seen}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]
        self.position = state["position"]
        self.tokens_seen = state["tokens_seen"]
        self._order = self.epoch_order(self.epoch)
