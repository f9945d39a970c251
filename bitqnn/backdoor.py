"""Backdoor-freeness: no trigger patch stamped on a base input makes the network pick a target class.

A trigger is an h x w patch whose pixels take any values of a range, placed with its
top-left corner at (row, column) of the image. For one base input and one location the
inputs it can produce form an integer box: the patch pixels (every channel at those
positions) range over the values, every other pixel keeps the base input's value. So each
location is an ordinary `Query` with the targeted violation, and the property is the
conjunction over locations. Engines never learn about patches; this module owns the
geometry in both directions: locations to boxes, and a found input back to the patch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bitqnn.qnn import QNN
from bitqnn.query import Box, Query, Violation

Location = tuple[int, int]  # (row, column) of the patch's top-left pixel


@dataclass(frozen=True)
class ImageLayout:
    """How the flat input is an image: channels first, then rows, then columns (C order)."""

    channels: int
    height: int
    width: int

    def patch_indices(self, location: Location, size: tuple[int, int]) -> np.ndarray:
        """Flat input indices under the patch, ordered [channel, row, column]."""
        (row, col), (h, w) = location, size
        grid = np.arange(self.channels * self.height * self.width).reshape(self.channels, self.height, self.width)
        return grid[:, row:row + h, col:col + w].reshape(-1)

    def locations(self, size: tuple[int, int]) -> tuple[Location, ...]:
        """Every top-left corner at which the patch fits, row by row."""
        h, w = size
        return tuple((r, c) for r in range(self.height - h + 1) for c in range(self.width - w + 1))


@dataclass(frozen=True, eq=False)
class BackdoorQuery:
    """One `backdoor_free` statement: a base input, a patch shape and value range, and the
    locations to try. `base` is the base input on the network's integer grid (flat);
    `values` is the inclusive integer range of every patch pixel; `violation` is "the
    target wins" under the statement's tie-break rule, as for `targeted`."""

    network: QNN
    base: np.ndarray
    layout: ImageLayout
    size: tuple[int, int]
    values: tuple[int, int]
    locations: tuple[Location, ...]
    target: int
    violation: Violation
    label: str = "backdoor"
    options: dict = field(default_factory=dict)

    @property
    def patch_points(self) -> int:
        """How many patches one location allows."""
        lo, hi = self.values
        return (hi - lo + 1) ** (self.layout.channels * self.size[0] * self.size[1])

    def query(self, location: Location) -> Query:
        """The ordinary query for one location: only the patch pixels vary."""
        lo, hi = self.base.copy(), self.base.copy()
        under = self.layout.patch_indices(location, self.size)
        lo[under], hi[under] = self.values
        label = f"{self.label} at {list(location)}"
        return Query(self.network, Box(lo, hi), self.violation, label, self.options)

    def stamp(self, location: Location, patch: np.ndarray) -> np.ndarray:
        """The base input with `patch` (shaped [channels, h, w]) placed at `location`."""
        x = self.base.copy()
        x[self.layout.patch_indices(location, self.size)] = np.asarray(patch, dtype=np.int64).reshape(-1)
        return x

    def describe_patch(self, location: Location, x: np.ndarray) -> dict:
        """The patch a triggered input `x` carries, as plain data for reports:
        where it sits, its size, and its pixels [channel][row][column] as integers and reals."""
        pixels = np.asarray(x, dtype=np.int64)[self.layout.patch_indices(location, self.size)]
        shape = (self.layout.channels, *self.size)
        real = self.network.dequantize_input(pixels)
        return {"at": list(location), "size": list(self.size),
                "values": pixels.reshape(shape).tolist(),
                "values_real": [[[float(v) for v in row] for row in channel] for channel in real.reshape(shape)]}
