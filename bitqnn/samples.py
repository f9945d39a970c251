"""Real-valued input samples from .npz, .npy and .csv files.

One rule for every format: a 1-D array is a single sample, otherwise axis 0 runs over
samples (a CSV file has one sample per row). Values come back as flat float64 vectors
in the network's real input units; mapping them onto an integer grid is the network's
job, not the file's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_SUFFIXES = (".npz", ".npy", ".csv")


class SampleError(ValueError):
    """A sample file that cannot be read, or a key or index it does not have."""


def _npz_array(path: Path, key: str | None) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.files)
        if key is None:
            if not names:
                raise SampleError(f"{path.name} holds no arrays")
            key = "x" if "x" in names else names[0]
        if key not in names:
            raise SampleError(f"{path.name} has no array '{key}'; it has {', '.join(names)}")
        return archive[key]


def load_samples(path: Path, key: str | None = None) -> np.ndarray:
    """Every sample in the file as float64 [N, size]; `key` picks an .npz array ('x' or the first by default)."""
    suffix = path.suffix.lower()
    if suffix not in SAMPLE_SUFFIXES:
        raise SampleError(f"cannot read samples from '{path.suffix}' files; use {', '.join(SAMPLE_SUFFIXES)}")
    if key is not None and suffix != ".npz":
        raise SampleError("a key names an array inside an .npz file only")
    try:
        if suffix == ".npz":
            array = _npz_array(path, key)
        elif suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            array = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except SampleError:
        raise
    except (OSError, ValueError) as err:
        raise SampleError(f"cannot read {path.name}: {err}") from err
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise SampleError(f"{path.name} holds {array.dtype} values, not real numbers")
    samples = np.asarray(array, dtype=np.float64)
    samples = samples.reshape(1, -1) if samples.ndim <= 1 else samples.reshape(samples.shape[0], -1)
    if not np.all(np.isfinite(samples)):
        raise SampleError(f"{path.name} holds NaN or infinite values")
    return samples
