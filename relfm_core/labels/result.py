"""What the label engine returns: labels per (entity, anchor) pair, and the target's window."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from relfm_core.pql import TaskType, TimeUnit


@dataclass(frozen=True)
class Window:
    """The target looks at rows with `anchor + start < time <= anchor + end`, in `unit`."""

    start: int | float
    end: int
    unit: TimeUnit

    @property
    def length(self) -> int:
        """end - start in `unit` (the lag and anchor stride); a -INF start has no length."""
        return int(self.end - self.start)


@dataclass(frozen=True)
class Labels:
    """One label per pair, in the order the pairs were given.

    - binary / regression: `values` float64 (binary 0.0 / 1.0);
    - multiclass: `values` int64 codes into `classes` (the sorted class values), -1 where null;
    - link prediction / multilabel: the lists `items[ptr[i] : ptr[i + 1]]` (sorted ascending): rows of
      the query's `link_target_table` for LIST_DISTINCT over a foreign key, codes into `classes`
      otherwise; `values` holds each list's length.
    `valid` is False where the label is null (AVG of an empty window, a comparison with a null side, an
    empty LIST_DISTINCT...): such pairs are left out of context, training and evaluation.
    """

    task_type: TaskType
    values: npt.NDArray[np.float64] | npt.NDArray[np.int64]
    valid: npt.NDArray[np.bool_]
    classes: np.ndarray | None = None
    ptr: npt.NDArray[np.int64] | None = None
    items: npt.NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return len(self.valid)

    @property
    def value(self) -> npt.NDArray[np.float64] | npt.NDArray[np.int64]:
        """Alias of `values`."""
        return self.values

    @property
    def is_list(self) -> bool:
        return self.ptr is not None

    def lists(self) -> list[list[int]]:
        """The list labels as Python lists (empty where null)."""
        assert self.ptr is not None and self.items is not None
        items = self.items.tolist()
        bounds = self.ptr.tolist()
        return [items[bounds[i] : bounds[i + 1]] for i in range(len(self))]

    def subset(self, idx: npt.NDArray[np.int64]) -> Labels:
        """The labels of pairs `idx` (in that order)."""
        if self.ptr is None or self.items is None:
            return Labels(self.task_type, self.values[idx], self.valid[idx], self.classes)
        ptr, items = take_lists(self.ptr, self.items, idx)
        return Labels(self.task_type, self.values[idx], self.valid[idx], self.classes, ptr, items)


def take_lists(
    ptr: npt.NDArray[np.int64], items: npt.NDArray[np.int64], idx: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Lists `idx` (in that order) of the lists items[ptr[i] : ptr[i + 1]], as (ptr, items)."""
    starts, ends = ptr[idx], ptr[idx + 1]
    lengths = ends - starts
    out = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    total = int(out[-1])
    pos = np.repeat(starts - out[:-1], lengths) + np.arange(total, dtype=np.int64)
    return out, items[pos]
