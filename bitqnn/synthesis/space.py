"""What a candidate quantization is, and which candidates a search may visit.

A candidate fixes, for every linear layer, its weight and activation widths and (optionally)
their fraction bits; everything else (input grid, roundings, bias widths) comes from the
spec's shared `fixed(...)`. A layer whose output is the raw accumulator has no activation
width to choose.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bitqnn.quantize import FixedPointConfig, LayerConfig


@dataclass(frozen=True)
class LayerSetting:
    weights: int
    activations: int | None  # None: the layer's output is its accumulator
    weight_frac: int | None = None  # None: the quantizer's own choice
    activation_frac: int | None = None

    def describe(self) -> str:
        text = f"w{self.weights}" + ("" if self.activations is None else f"a{self.activations}")
        fracs = [f"{name}{value}" for name, value in (("wf", self.weight_frac), ("af", self.activation_frac))
                 if value is not None]
        return text + ("(" + ",".join(fracs) + ")" if fracs else "")


@dataclass(frozen=True)
class Candidate:
    layers: tuple[LayerSetting, ...]

    def describe(self) -> str:
        return " ".join(layer.describe() for layer in self.layers)

    def config(self, base: FixedPointConfig) -> FixedPointConfig:
        """The shared config with this candidate's per-layer settings as overrides."""
        overrides = tuple(LayerConfig(index, weights=s.weights, weight_frac=s.weight_frac,
                                      activations=s.activations, activation_frac=s.activation_frac)
                          for index, s in enumerate(self.layers))
        return replace(base, layers=overrides)

    def uniform_width(self) -> int | None:
        widths = {s.weights for s in self.layers} | {s.activations for s in self.layers if s.activations is not None}
        return widths.pop() if len(widths) == 1 else None


@dataclass(frozen=True)
class LayerChoices:
    """The values each field of one layer may take; widths ascending, fraction bits in the spec's
    order (the first is tried first)."""

    weights: tuple[int, ...]
    activations: tuple[int, ...]  # empty for an accumulator output
    weight_frac: tuple[int | None, ...] = (None,)
    activation_frac: tuple[int | None, ...] = (None,)


@dataclass(frozen=True)
class SearchSpace:
    layers: tuple[LayerChoices, ...]

    def size(self) -> int:
        total = 1
        for c in self.layers:
            total *= len(c.weights) * max(1, len(c.activations)) * len(c.weight_frac) * len(c.activation_frac)
        return total

    def largest(self) -> Candidate:
        return Candidate(tuple(LayerSetting(c.weights[-1], c.activations[-1] if c.activations else None,
                                            c.weight_frac[0], c.activation_frac[0]) for c in self.layers))

    def uniform(self) -> list[Candidate]:
        """Every width w that all layers allow for all their widths, as candidates, w ascending."""
        common = set(self.layers[0].weights)
        for c in self.layers:
            common &= set(c.weights) & (set(c.activations) if c.activations else common)
        return [Candidate(tuple(LayerSetting(w, w if c.activations else None, c.weight_frac[0], c.activation_frac[0])
                                for c in self.layers)) for w in sorted(common)]

    def neighbours(self, candidate: Candidate) -> list[Candidate]:
        """Candidates one width change away: one layer's weights or activations one choice lower."""
        found = []
        for index, (setting, choices) in enumerate(zip(candidate.layers, self.layers, strict=True)):
            for field in ("weights", "activations"):
                current = getattr(setting, field)
                if current is None:
                    continue
                options = getattr(choices, field)
                position = options.index(current)
                if position > 0:
                    layers = list(candidate.layers)
                    layers[index] = replace(setting, **{field: options[position - 1]})
                    found.append(Candidate(tuple(layers)))
        return found

    def fraction_variants(self, candidate: Candidate) -> list[Candidate]:
        """The same widths with one layer's weight or activation fraction bits another choice,
        in the order the spec lists them."""
        found = []
        for index, (setting, choices) in enumerate(zip(candidate.layers, self.layers, strict=True)):
            for field in ("weight_frac", "activation_frac"):
                if field == "activation_frac" and setting.activations is None:
                    continue
                for value in getattr(choices, field):
                    if value != getattr(setting, field):
                        layers = list(candidate.layers)
                        layers[index] = replace(setting, **{field: value})
                        found.append(Candidate(tuple(layers)))
        return found
