"""MA profiles: a model's massive-activation channels per block, calibrated once and saved as
safetensors with the model's family, shape and weight fingerprint, so that loading one into
another model is a clear error."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Dict, Iterable, Optional, Tuple

import torch

from .tagged_file import read_tagged, save_tagged

FORMAT = "comfyui-stas/ma-profile/1"
N_PROBES = 16
"""1-D weight tensors (biases, norm scales) a fingerprint keeps."""
N_SAMPLES = 32
"""Values kept per probe (evenly spaced), compared one by one."""
MAX_DIFFERING = 0.125
"""Share of a probe's sampled values that may differ beyond rounding before it counts as another checkpoint."""


@dataclass(frozen=True)
class Probe:
    """One 1-D weight tensor, in float64: its statistics and a few of its values."""

    name: str
    mean: float
    mean_abs: float
    rms: float
    eps: float    # resolution (finfo.eps) of the dtype the tensor was stored in
    step: float   # its smallest positive value (subnormal spacing): rounding near zero
    values: Tuple[float, ...] = ()

    def differs(self, q: "Probe") -> bool:
        """More than rounding to the coarser of the two storage dtypes apart."""
        eps, step = max(self.eps, q.eps, 1e-6), max(self.step, q.step)
        scale = max(self.mean_abs, q.mean_abs, 1e-12)
        if (abs(self.mean_abs - q.mean_abs) > eps * scale or abs(self.mean - q.mean) > eps * scale
                or abs(self.rms - q.rms) > eps * max(self.rms, q.rms, 1e-12)):
            return True
        if len(self.values) != len(q.values):
            return True
        off = sum(abs(a - b) > eps * max(abs(a), abs(b)) + step for a, b in zip(self.values, q.values))
        return off > MAX_DIFFERING * len(self.values)


@dataclass(frozen=True)
class ModelFingerprint:
    """Identifies the checkpoint a profile was made on, cheaply and independently of device and dtype:
a hash of every weight/bias name and shape, plus statistics of up to ``N_PROBES`` 1-D tensors
compared within rounding to the coarser storage dtype."""

    shapes: str
    n_tensors: int
    probes: Tuple[Probe, ...]

    @classmethod
    def of(cls, tensors: Iterable[Tuple[str, Tuple[int, ...], torch.Tensor]]) -> "ModelFingerprint":
        """Fingerprint of a model given as (name, shape, tensor) for each parameter."""
        named = sorted((n, tuple(int(s) for s in shape), t) for n, shape, t in tensors
                       if n.endswith((".weight", ".bias")))
        h = hashlib.sha256()
        for n, shape, _ in named:
            h.update(f"{n}:{shape}\n".encode())
        flat = [(n, t) for n, shape, t in named if len(shape) == 1 and shape[0] > 0 and t.dtype.is_floating_point]
        picks = flat if len(flat) <= N_PROBES else [flat[round(i * (len(flat) - 1) / (N_PROBES - 1))]
                                                    for i in range(N_PROBES)]
        probes = []
        for n, t in picks:
            k = min(N_SAMPLES, t.numel())
            idx = [round(i * (t.numel() - 1) / max(k - 1, 1)) for i in range(k)]
            if t.device.type == "meta":   # a weight the checkpoint lacks: ComfyUI runs it as zeros
                st, vals = [0.0, 0.0, 0.0], [0.0] * k
            else:
                x = t.detach().reshape(-1).to(torch.float64)
                both = torch.cat([torch.stack([x.mean(), x.abs().mean(), x.square().mean().sqrt()]),
                                  x[torch.tensor(idx, device=x.device)]]).tolist()   # one transfer
                st, vals = both[:3], both[3:]
            fi = torch.finfo(t.dtype)
            probes.append(Probe(n, st[0], st[1], st[2], float(fi.eps), float(getattr(fi, "smallest_normal", fi.tiny))
                                * float(fi.eps), tuple(vals)))
        return cls(h.hexdigest()[:16], len(named), tuple(probes))

    def mismatch(self, other: "ModelFingerprint") -> Optional[str]:
        """None when ``other`` is the same checkpoint (up to storage dtype), else what differs."""
        if (self.shapes, self.n_tensors) != (other.shapes, other.n_tensors):
            return (f"its weight shapes differ ({self.n_tensors} tensors, shape hash {self.shapes} vs "
                    f"{other.n_tensors}, {other.shapes}: another variant of this architecture)")
        theirs = {p.name: p for p in other.probes}
        for p in self.probes:
            q = theirs.get(p.name)
            if q is None:
                return f"it has no weight {p.name}"
            if p.differs(q):
                return (f"its weights differ (e.g. {p.name}: mean |w| {p.mean_abs:.6g} vs {q.mean_abs:.6g}, "
                        f"mean {p.mean:.6g} vs {q.mean:.6g}: another checkpoint of the same shape)")
        return None

    def to_json(self) -> Dict:
        return {"shapes": self.shapes, "n_tensors": self.n_tensors,
                "probes": [[p.name, p.mean, p.mean_abs, p.rms, p.eps, p.step, list(p.values)] for p in self.probes]}

    @classmethod
    def from_json(cls, d: Dict) -> "ModelFingerprint":
        return cls(str(d["shapes"]), int(d["n_tensors"]),
                   tuple(Probe(str(n), float(m), float(a), float(r), float(e), float(st), tuple(float(v) for v in vs))
                         for n, m, a, r, e, st, vs in d["probes"]))


@dataclass(frozen=True)
class MAProfile:
    family: str
    hidden_size: int
    n_blocks: int
    channels: Dict[int, Tuple[int, ...]]               # flat block index -> channels
    reference: Dict[int, Tuple[float, ...]] = field(default_factory=dict)  # block -> |h| max per channel
    info: Dict[str, str] = field(default_factory=dict, compare=False)    # free-form provenance (model, steps, threshold)
    fingerprint: Optional[ModelFingerprint] = field(default=None, compare=False)  # None: saved before fingerprints

    def check_model(self, family: str, hidden_size: int, n_blocks: int,
                    fingerprint: Optional[ModelFingerprint] = None, model_file: Optional[str] = None) -> None:
        """Raise ValueError when this profile was made for a different model (``model_file``: the file that model was
        loaded from, for the message).  A profile without a fingerprint (older files) is checked by family, hidden
        size and block count only."""
        src, ckpt = self.info.get("file"), self.info.get("checkpoint")
        files = (f" The profile {src!r} was recorded on " if src else " The profile was recorded on ") + \
            (repr(ckpt) if ckpt else f"a {self.info.get('model', family)} model") + \
            (f"; this model was loaded from {model_file!r}." if model_file else ".")
        fix = ("Record a profile of this model (MA Recorder -> sampler -> Save MA Profile, with the model loaded as it "
               "is here: a GGUF or fp8 copy of the profile's own checkpoint is accepted, a copy of another is not), or "
               "disconnect the profile." + (files if src or ckpt or model_file else ""))
        if (family, hidden_size, n_blocks) != (self.family, self.hidden_size, self.n_blocks):
            raise ValueError(
                f"profile: made for a {self.family} model with hidden size {self.hidden_size} and "
                f"{self.n_blocks} blocks, but this is a {family} model with hidden size {hidden_size} and "
                f"{n_blocks} blocks. {fix}")
        if self.fingerprint is not None and fingerprint is not None:
            why = self.fingerprint.mismatch(fingerprint)
            if why is not None:
                raise ValueError(
                    f"profile: made on another {family} model: {why}. A profile belongs to the checkpoint it was "
                    f"recorded on (each Wan 2.2 A14B expert needs its own). {fix}")

    def block_sources(self, blocks: Iterable[int]) -> Dict[int, int]:
        """For each block, the profile block whose channels it uses: itself when recorded, else the
        nearest recorded one (MA channels are largely shared across layers; the node says so)."""
        if not self.channels:
            return {}
        return {b: b if b in self.channels else min(self.channels, key=lambda c: (abs(c - b), c)) for b in blocks}

    def channels_for(self, block: int) -> Optional[Tuple[int, ...]]:
        """Channels for ``block`` (those of its ``block_sources`` block)."""
        src = self.block_sources([block]).get(block)
        return None if src is None else self.channels[src]

    def save(self, path: str) -> None:
        tensors = {f"channels.{b}": torch.tensor(c, dtype=torch.int64) for b, c in self.channels.items()}
        tensors.update({f"reference.{b}": torch.tensor(r, dtype=torch.float32) for b, r in self.reference.items()})
        meta = {"format": FORMAT, "family": self.family, "hidden_size": str(self.hidden_size),
                "n_blocks": str(self.n_blocks), "blocks": json.dumps(sorted(self.channels)),
                "info": json.dumps(self.info)}
        if self.fingerprint is not None:
            meta["fingerprint"] = json.dumps(self.fingerprint.to_json())
        save_tagged(tensors, path, meta)

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
        fp = meta.get("fingerprint")
        return cls(meta["family"], int(meta["hidden_size"]), int(meta["n_blocks"]), chans, ref,
                   json.loads(meta.get("info") or "{}"), ModelFingerprint.from_json(json.loads(fp)) if fp else None)

    def describe(self) -> str:
        """One line per block: its channels (and reference magnitudes), for the nodes' text output."""
        lines = [f"MA profile: {self.family}, hidden size {self.hidden_size}, {self.n_blocks} blocks."]
        for b in sorted(self.channels):
            ref = self.reference.get(b)
            refs = f" (peak |h| {', '.join(f'{r:.4g}' for r in ref)})" if ref else ""
            lines.append(f"  block {b}: channels {list(self.channels[b])}{refs}")
        if self.info:
            lines.append("  " + ", ".join(f"{k}: {v}" for k, v in sorted(self.info.items())))
        lines.append(f"  model fingerprint: shape hash {self.fingerprint.shapes}" if self.fingerprint is not None
                     else "  no model fingerprint (saved by an older comfyui-stas): checked by family, hidden size "
                          "and block count only; save it again to check the model too.")
        return "\n".join(lines)
