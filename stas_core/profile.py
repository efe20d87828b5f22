"""MA profiles: a model's massive-activation channels, calibrated once and saved.

A profile stores, per block, the detected MA channels (and optionally their reference
magnitudes) together with the model's family, hidden size and block count, so that
loading it into a different model is a clear error instead of steering the wrong channels.
Stored as safetensors (tensors + string metadata), the format ComfyUI users already trust.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch

from .tagged_file import read_tagged

FORMAT = "comfyui-stas/ma-profile/1"


@dataclass(frozen=True)
class MAProfile:
    family: str
    hidden_size: int
    n_blocks: int
    channels: Dict[int, Tuple[int, ...]]               # flat block index -> channels
    reference: Dict[int, Tuple[float, ...]] = field(default_factory=dict)  # block -> |h| max per channel
    info: Dict[str, str] = field(default_factory=dict, compare=False)    # free-form provenance (model, steps, threshold)

    def check_model(self, family: str, hidden_size: int, n_blocks: int) -> None:
        """Raise ValueError when this profile was made for a different model."""
        if (family, hidden_size, n_blocks) != (self.family, self.hidden_size, self.n_blocks):
            raise ValueError(
                f"profile: made for a {self.family} model with hidden size {self.hidden_size} and "
                f"{self.n_blocks} blocks, but this is a {family} model with hidden size {hidden_size} and "
                f"{n_blocks} blocks. Record a profile of this model with the MA Recorder, or disconnect the profile.")

    def channels_for(self, block: int) -> Optional[Tuple[int, ...]]:
        """Channels for ``block``; a profile of one block serves every block (MA channels are
        shared across layers), so fall back to the block nearest to it."""
        if block in self.channels:
            return self.channels[block]
        if not self.channels:
            return None
        nearest = min(self.channels, key=lambda b: (abs(b - block), b))
        return self.channels[nearest]

    def save(self, path: str) -> None:
        from safetensors.torch import save_file

        tensors = {f"channels.{b}": torch.tensor(c, dtype=torch.int64) for b, c in self.channels.items()}
        tensors.update({f"reference.{b}": torch.tensor(r, dtype=torch.float32) for b, r in self.reference.items()})
        meta = {"format": FORMAT, "family": self.family, "hidden_size": str(self.hidden_size),
                "n_blocks": str(self.n_blocks), "blocks": json.dumps(sorted(self.channels)),
                "info": json.dumps(self.info)}
        save_file(tensors, path, metadata=meta)

    @classmethod
    def load(cls, path: str) -> "MAProfile":
        try:
            meta, tensors = read_tagged(path, FORMAT, "MA profile")
        except ValueError as e:
            raise ValueError(f"profile: {e}") from None
        chans, ref = {}, {}
        for k, t in tensors.items():
            kind, b = k.split(".", 1)
            if kind == "channels":
                chans[int(b)] = tuple(int(v) for v in t.tolist())
            elif kind == "reference":
                ref[int(b)] = tuple(float(v) for v in t.tolist())
        return cls(meta["family"], int(meta["hidden_size"]), int(meta["n_blocks"]), chans, ref,
                   json.loads(meta.get("info") or "{}"))

    def describe(self) -> str:
        """One line per block: its channels (and reference magnitudes), for the nodes' text output."""
        lines = [f"MA profile: {self.family}, hidden size {self.hidden_size}, {self.n_blocks} blocks."]
        for b in sorted(self.channels):
            ref = self.reference.get(b)
            refs = f" (peak |h| {', '.join(f'{r:.4g}' for r in ref)})" if ref else ""
            lines.append(f"  block {b}: channels {list(self.channels[b])}{refs}")
        if self.info:
            lines.append("  " + ", ".join(f"{k}: {v}" for k, v in sorted(self.info.items())))
        return "\n".join(lines)
