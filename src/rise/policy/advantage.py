"""Advantages from a progress value model, and their discrete bins (the policy's conditioning).

The value model gives every frame a progress value V. The advantage of an action chunk that starts
at frame ``t`` is how much the following frames gain over the start::

    A_t = mean(V[t+1 : t+1+horizon]) - V[t]        (the window is cut at the episode's end)

The policy is conditioned on the *bin* of A_t rather than on A_t itself: :class:`AdvantageBins`
cuts ``[low, high]`` into ``num_bins`` intervals (values outside go to the first or last bin), and
one extra index, :attr:`AdvantageBins.unknown`, means "no advantage given". Demonstrations and
human corrections are labelled with the best bin; at deployment the policy is asked for it too.

Example::

    bins = AdvantageBins.uniform(num_bins=10, low=-1.0, high=1.0)
    labels = label_episode(values, horizon=8, bins=bins, demo=False)    # (T,) ints in [0, 10)
    bins.bin_of(0.35)                                                   # 6
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

_FORMAT = "rise-advantage-bins-v1"


def chunk_advantage(next_values: Sequence[float] | np.ndarray, start_value: float) -> float:
    """A = mean over the chunk of V(next frames) - V(start frame).

    Example::

        chunk_advantage([0.2, 0.4], 0.1)   # 0.2
    """
    values = np.asarray(next_values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("next_values is empty: a chunk needs at least one frame after the start")
    if not (np.all(np.isfinite(values)) and np.isfinite(start_value)):
        raise ValueError("next_values and start_value must be finite")
    return float(values.mean() - float(start_value))


@dataclasses.dataclass(frozen=True)
class AdvantageBins:
    """``num_bins`` advantage intervals ``[edges[i], edges[i+1])`` (the last one closed).

    ``edges`` (any increasing sequence of ``num_bins + 1`` finite floats) is stored as a tuple, so
    bins compare by value and serialise to JSON as they are.

    Example::

        bins = AdvantageBins.uniform(num_bins=4, low=-1.0, high=1.0)   # edges -1, -0.5, 0, 0.5, 1
        bins.bin_of([-3.0, -0.5, 0.0, 1.0])                            # array([0, 1, 2, 3])
        bins.best, bins.unknown                                        # 3, 4
    """

    edges: tuple[float, ...]

    def __post_init__(self):
        edges = np.asarray(self.edges, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2:
            raise ValueError(f"edges must be a flat sequence of at least 2 floats, got shape {edges.shape}")
        if not np.all(np.isfinite(edges)):
            raise ValueError(f"edges must be finite, got {edges.tolist()}")
        if not np.all(np.diff(edges) > 0):
            raise ValueError(f"edges must be strictly increasing, got {edges.tolist()}")
        object.__setattr__(self, "edges", tuple(float(e) for e in edges))

    @classmethod
    def uniform(cls, num_bins: int = 10, low: float = -1.0, high: float = 1.0) -> AdvantageBins:
        """``num_bins`` equal intervals covering ``[low, high]``."""
        if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
            raise ValueError(f"num_bins must be an integer >= 1, got {num_bins!r}")
        if not high > low:
            raise ValueError(f"high must be greater than low, got low={low}, high={high}")
        return cls(tuple(np.linspace(low, high, int(num_bins) + 1).tolist()))

    @property
    def num_bins(self) -> int:
        return len(self.edges) - 1

    @property
    def unknown(self) -> int:
        """The extra index meaning "advantage not given" (= ``num_bins``)."""
        return self.num_bins

    @property
    def best(self) -> int:
        """The highest-advantage bin (= ``num_bins - 1``): demos, corrections and deployment."""
        return self.num_bins - 1

    def bin_of(self, advantage: float | Sequence[float] | np.ndarray) -> int | np.ndarray:
        """The bin index of a scalar (an int) or of every element of an array (int64, same shape).

        A value on an inner edge belongs to the bin above it; values below ``edges[0]`` go to bin 0
        and values above ``edges[-1]`` to the last bin. NaN is refused.
        """
        a = np.asarray(advantage, dtype=np.float64)
        if np.any(np.isnan(a)):
            raise ValueError("advantage must not be NaN")
        index = np.searchsorted(np.asarray(self.edges), a, side="right") - 1
        index = np.clip(index, 0, self.num_bins - 1).astype(np.int64)
        return int(index) if index.ndim == 0 else index

    def to_dict(self) -> dict:
        """JSON-ready mapping (the inverse of :meth:`from_dict`)."""
        return {"format": _FORMAT, "edges": list(self.edges)}

    @classmethod
    def from_dict(cls, data: dict) -> AdvantageBins:
        """Bins from :meth:`to_dict`'s mapping; a clear ValueError on anything else."""
        if not isinstance(data, dict) or "edges" not in data:
            raise ValueError("expected a mapping with an 'edges' list")
        if data.get("format", _FORMAT) != _FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {_FORMAT!r}")
        edges = data["edges"]
        if not isinstance(edges, list) or not all(
            isinstance(e, (int, float)) and not isinstance(e, bool) for e in edges
        ):
            raise ValueError(f"edges must be a list of numbers, got {edges!r}")
        return cls(tuple(edges))


def episode_advantages(values: np.ndarray, horizon: int) -> np.ndarray:
    """Advantages (T,) of the chunks starting at every frame of one episode.

    ``A_t = mean(values[t+1 : t+1+horizon]) - values[t]``; near the end the window holds only the
    frames that remain, and the last frame (no later frame) gets 0.

    Example::

        episode_advantages(np.array([0.0, 0.2, 0.6, 0.7]), horizon=2)   # [0.4, 0.45, 0.1, 0.0]
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"values must be 1-D (T,), got shape {v.shape}")
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
    if not np.all(np.isfinite(v)):
        raise ValueError("values must be finite")
    n = v.size
    out = np.zeros(n, dtype=np.float64)
    if n < 2:
        return out
    cumsum = np.concatenate([[0.0], np.cumsum(v)])
    t = np.arange(n - 1)
    end = np.minimum(t + 1 + horizon, n)
    out[:-1] = (cumsum[end] - cumsum[t + 1]) / (end - t - 1) - v[:-1]
    return out


def label_episode(values: np.ndarray, horizon: int, bins: AdvantageBins, demo: bool) -> np.ndarray:
    """The advantage bin (T,) int64 of every frame; demos and human corrections get ``bins.best``.

    Example::

        label_episode(values, horizon=8, bins=AdvantageBins.uniform(), demo=True)   # all 9
    """
    advantages = episode_advantages(values, horizon)
    if demo:
        return np.full(advantages.shape, bins.best, dtype=np.int64)
    return np.asarray(bins.bin_of(advantages), dtype=np.int64)
