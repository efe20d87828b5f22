"""Which pass of a guider is the positive prompt and which the negative: the one place that knows.
Each guider's conds order is mapped, by the class that defines its ``predict_noise``, to the
roles ``positive``, ``negative`` and ``other`` (extra passes, which only ``both`` steers)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

from ..stas_core.record import PROMPT_NAMES
from . import compile_breaks

POSITIVE, NEGATIVE, OTHER = "positive", "negative", "other"
ALL_ROLES: FrozenSet[str] = frozenset({POSITIVE, NEGATIVE, OTHER})
STANDARD: Tuple[str, ...] = (POSITIVE, NEGATIVE)
EVERY: FrozenSet[int] = frozenset(range(64))  # every pass index, more than any guider runs

PROMPTS: Dict[str, FrozenSet[str]] = {PROMPT_NAMES[0]: frozenset({POSITIVE}), PROMPT_NAMES[1]: frozenset({NEGATIVE}),
                                      "both": ALL_ROLES}
"""The user's choice of pass (STAS Model Patch's apply_to, the MA Recorder's record) -> roles."""


def prompt_name(roles: FrozenSet[str]) -> str:
    """The PROMPTS name of ``roles`` ('both' for any set that is not exactly one prompt)."""
    return next((name for name, r in PROMPTS.items() if r == roles), "both")


@dataclass(frozen=True)
class GuiderPasses:
    """The passes of one sampling run's guider."""

    name: str                         # the guider's class name, for messages
    roles: Tuple[str, ...]            # role of each cond_or_uncond index
    runs: FrozenSet[str]              # roles this run computes (cfg 1 skips the negative pass)
    known: bool = True
    negative_model: Any = None        # DualModelGuider: the BaseModel that runs the negative pass
    ambiguous: bool = False           # DualModelGuider with one model for both passes

    def indices(self, apply_to: FrozenSet[str], model: Any = None) -> FrozenSet[int]:
        """cond_or_uncond indices steered in a call of ``model`` (the BaseModel called)."""
        if self.negative_model is not None and model is self.negative_model and not self.ambiguous:
            return frozenset({0}) if NEGATIVE in apply_to else frozenset()
        if not self.known and apply_to == ALL_ROLES:
            return EVERY
        return frozenset(i for i, r in enumerate(self.roles) if r in apply_to)


DEFAULT = GuiderPasses("KSampler", STANDARD, frozenset(STANDARD))
"""Calls outside a sampling run (tests, other packs calling apply_model) use KSampler's order."""


def _owner(guider) -> Tuple[str, str]:
    """(module, class) defining ``predict_noise``; the module's path or dotted name reduced to
    its last two parts (ComfyUI loads comfy_extras by file path, ``import`` by dotted name)."""
    for cls in type(guider).__mro__:
        if "predict_noise" in vars(cls):
            return ".".join(re.split(r"[./\\]", cls.__module__)[-2:]), cls.__qualname__
    return "", ""


def _has(conds, key) -> bool:
    return bool((conds or {}).get(key))


def _one(x) -> bool:
    return math.isclose(float(x), 1.0)


def passes_of(guider) -> GuiderPasses:
    """The passes of ``guider`` (a comfy.samplers.CFGGuider or a pack's guider), for this run."""
    name = type(guider).__name__
    conds = getattr(guider, "conds", None) or {}
    cfg1_opt = not (getattr(guider, "model_options", None) or {}).get("disable_cfg1_optimization", False)
    owner = _owner(guider)
    if owner == ("comfy.samplers", "CFGGuider"):  # KSampler, CFGGuider, BasicGuider, ...
        neg = _has(conds, "negative") and not (cfg1_opt and _one(guider.cfg))
        return GuiderPasses(name, STANDARD, _runs(_has(conds, "positive"), neg))
    if owner == ("comfy_extras.nodes_lt", "Guider_LTXAVDualCFG"):  # CFGGuider's passes, two scales
        same = math.isclose(guider.video_cfg, guider.audio_cfg)
        neg = _has(conds, "negative") and not (same and _one(guider.video_cfg))
        return GuiderPasses(name, STANDARD, _runs(_has(conds, "positive"), neg))
    if owner == ("comfy_extras.nodes_custom_sampler", "Guider_DualCFG"):
        # [negative, middle (cond2), positive (cond1)], both styles; regular skips at cfg 1
        nested = getattr(guider, "nested", False)
        neg = _has(conds, "negative") and (nested or not (cfg1_opt and _one(guider.cfg2)))
        mid = _has(conds, "middle") and (nested or not (cfg1_opt and _one(guider.cfg2) and _one(guider.cfg1)))
        return GuiderPasses(name, (NEGATIVE, OTHER, POSITIVE), _runs(_has(conds, "positive"), neg, mid))
    if owner == ("comfy_extras.nodes_perpneg", "Guider_PerpNeg"):
        # [positive, negative, empty]; the negative pass is skipped at neg_scale 0
        neg = _has(conds, "negative") and not (cfg1_opt and math.isclose(guider.neg_scale, 0.0))
        empty = _has(conds, "empty_negative_prompt") and not (cfg1_opt and math.isclose(guider.neg_scale, 0.0)
                                                               and _one(guider.cfg))
        return GuiderPasses(name, (POSITIVE, NEGATIVE, OTHER), _runs(_has(conds, "positive"), neg, empty))
    if owner == ("comfy_extras.nodes_custom_sampler", "Guider_DualModel"):
        # positive pass on `model`, negative pass (also index 0) on `model_negative`
        neg_mp = getattr(guider, "uncond_model_patcher", None)
        neg_model = getattr(neg_mp, "model", None)
        neg = neg_model is not None and _has(conds, "negative") and not (cfg1_opt and _one(guider.cfg))
        return GuiderPasses(name, (POSITIVE,), _runs(_has(conds, "positive"), neg), negative_model=neg_model,
                            ambiguous=neg and neg_model is guider.model_patcher.model)
    return GuiderPasses(name, STANDARD, ALL_ROLES, known=False)


def _runs(pos: bool, neg: bool, other: bool = False) -> FrozenSet[str]:
    return frozenset(r for r, on in ((POSITIVE, pos), (NEGATIVE, neg), (OTHER, other)) if on)


def pass_samples(cond_or_uncond: Optional[List[int]], batch: int) -> List[Tuple[int, int, int]]:
    """(pass, first sample, samples) of each CFG pass batched into a model call, a pass being an index into the
    guider's conds list (see ``GuiderPasses.indices``); a call with no pass list is one positive pass. The one
    place that maps passes to samples (STAS steers them, the MA Recorder records them)."""
    cou = list(cond_or_uncond or [0])
    per = batch // len(cou)
    return [(c, k * per, per) for k, c in enumerate(cou)]


def steered_samples(cond_or_uncond: Optional[List[int]], batch: int, steered: FrozenSet[int]) -> Tuple[int, ...]:
    """Samples of a batched model call whose pass is in ``steered``."""
    return tuple(s for c, s0, n in pass_samples(cond_or_uncond, batch) if c in steered for s in range(s0, s0 + n))


# -- step caches (ComfyUI's EasyCache / LazyCache) -------------------------------------------------------

CACHE_KEY = "easycache"
"""transformer_options key of the holder ComfyUI's EasyCache and LazyCache nodes put on the MODEL (its
``name``, ``start_percent``, ``end_percent``): a step they skip runs no block (EasyCache: the diffusion
model is not called; LazyCache: the model is not called at all)."""


@dataclass(frozen=True)
class StepCache:
    """A step cache in a sampling run: which steps it may skip (sigma in ``lo < s <= hi``)."""

    name: str
    start_percent: float
    end_percent: float
    lo: float
    hi: float
    compiled: bool   # under TorchCompileModel: which calls ran a block is not seen (the graph replays them)

    def may_skip(self, sigma: float) -> bool:
        return self.lo < sigma <= self.hi

    def describe(self) -> str:
        return f"{self.name} ({self.start_percent:g}-{self.end_percent:g} of denoising)"


def cache_of(guider) -> Optional[StepCache]:
    """The step cache of ``guider``'s model in this run, or None."""
    to = (getattr(guider, "model_options", None) or {}).get("transformer_options") or {}
    holder = to.get(CACHE_KEY)
    if holder is None or not hasattr(holder, "start_percent"):
        return None
    ms = guider.model_patcher.get_model_object("model_sampling")
    wrappers = (to.get("wrappers") or {}).get("apply_model") or {}
    return StepCache(str(getattr(holder, "name", type(holder).__name__)), float(holder.start_percent),
                     float(holder.end_percent), float(ms.percent_to_sigma(holder.end_percent)),
                     float(ms.percent_to_sigma(holder.start_percent)), compile_breaks.COMPILE_KEY in wrappers)


def skipped_steps(sigmas: List[float], steps: List[int], computed: List[float]) -> List[int]:
    """Those of ``steps`` (indices into ``sigmas``) at whose sigma no model call in ``computed`` ran a block."""
    return [i for i in steps if not any(math.isclose(sigmas[i], c, rel_tol=1e-6, abs_tol=1e-9) for c in computed)]
