"""Files a spec names: paths resolve against the spec's own folder.

That makes a spec and the models and samples beside it a unit that can be moved or
run from any working directory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bitqnn.samples import SampleError, load_samples
from bitqnn.spec import ast
from bitqnn.spec.errors import SpecError


def existing_file(path: ast.String, base_dir: Path) -> Path:
    resolved = (base_dir / path.text).resolve()
    if not resolved.is_file():
        raise SpecError(f"no such file: {path.text} (looked for {resolved})", path.pos)
    return resolved


def read_samples(path: ast.String, key: ast.String | None, base_dir: Path) -> np.ndarray:
    """All samples of a file as float64 [N, size]."""
    try:
        return load_samples(existing_file(path, base_dir), None if key is None else key.text)
    except SampleError as err:
        raise SpecError(str(err), path.pos if key is None else key.pos) from None


def read_sample(sample: ast.Sample, base_dir: Path) -> np.ndarray:
    """The flat real sample a `sample` expression names."""
    samples = read_samples(sample.path, sample.key, base_dir)
    count = samples.shape[0]
    if sample.index is None:
        if count != 1:
            raise SpecError(f"{sample.path.text} holds {count} samples; pick one with 'index N'", sample.pos)
        return samples[0]
    return samples[sample_index(sample.index, count, sample.path)]


def sample_index(number: ast.Number, count: int, path: ast.String) -> int:
    """A row index written in the spec, checked against the `count` rows of the file `path`."""
    index = number.value
    if index.denominator != 1 or not 0 <= index < count:
        raise SpecError(f"{path.text} holds {count} samples, so index must be a whole number "
                        f"from 0 to {count - 1}", number.pos)
    return int(index)
