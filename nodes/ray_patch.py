"""STAS Model Patch (Ray): STAS Model Patch on every raylight worker, exact under sequence parallelism
(xDiT USP: each worker holds a slice of the tokens; stas_core/shard.py). Imports without raylight:
queueing a graph with the node then stops at ComfyUI's validation with "raylight is not installed" (the
node is an output node, so ComfyUI validates it even where nothing can consume RAY_ACTORS, and its
ray_actors input is optional, so ComfyUI's own "Required input is missing" does not come first). How it
reaches the workers: docs/multigpu.md.

raylight keeps one model per worker and its patch nodes replace it in place, so a patch left there would
steer every later run, this node bypassed or not. This node therefore leaves the workers as it found them
and hands on its own RAY_ACTORS (SteeredWorker handles): a sampler fed by it has STAS installed on each
worker just before its sampling call and taken off just after (an actor runs one caller's calls in order);
a sampler fed by the loader, as when this node is bypassed, samples the plain model.
"""
from __future__ import annotations

import os
from dataclasses import asdict

from comfy_api.latest import io

from ..stas_core.channels import parse_channels
from ..stas_core.layout import BoundarySpec
from ..stas_core.profile import MAProfile, ModelFingerprint
from ..stas_core.shard import Shard
from ..stas_core.shared import Shared
from . import _ray_worker
from .stas_model_patch import StasModelPatch
from .types import named_errors

NAME = "STAS Model Patch (Ray)"
RayActors = io.Custom("RAY_ACTORS")  # raylight's handle on its GPU workers


class XfuserSequenceParallel(Shared):
    """The plan's ``shard`` source on a raylight worker: this rank of xDiT's sequence-parallel group
    (None where the group has one rank, or xDiT is not set up: one-process STAS then)."""

    def __init__(self) -> None:
        self._shard = None

    def __call__(self):
        if self._shard is None:
            try:
                from xfuser.core.distributed import (get_sequence_parallel_rank, get_sequence_parallel_world_size,
                                                     get_sp_group)
                world = int(get_sequence_parallel_world_size())
                if world <= 1:
                    return None
                self._shard = Shard(get_sp_group().device_group, int(get_sequence_parallel_rank()), world)
            except (ImportError, AssertionError, AttributeError):  # no xDiT, or its groups are not initialised
                return None
        return self._shard


class _WorkerPatch(StasModelPatch):
    """STAS Model Patch as it runs on a worker: the same checks and plan, plus the shard source."""

    @classmethod
    def sequence_parallel(cls):
        return XfuserSequenceParallel()


BASE_ATTR = "_comfyui_stas_ray_base"  # on a model this node patched on a worker: the model it was made from


def patch_on_worker(model, settings: dict):
    """On a worker: the worker's model with STAS installed (replacing what this node installed on it
    before, so re-running the node never stacks two patches)."""
    base = getattr(model, BASE_ATTR, model)
    s = dict(settings)
    if s.get("mask") is not None:
        s["mask"] = BoundarySpec(**s["mask"])
    if s.get("profile") is not None:
        p = dict(s["profile"])
        p["channels"] = {int(b): tuple(c) for b, c in p["channels"].items()}
        p["reference"] = {int(b): tuple(r) for b, r in p["reference"].items()}
        p["fingerprint"] = ModelFingerprint.from_json(p["fingerprint"]) if p["fingerprint"] is not None else None
        s["profile"] = MAProfile(**p)
    patched = _WorkerPatch.execute(base, **s)[0]
    setattr(patched, BASE_ATTR, base)
    return patched


def unpatch_on_worker(model):
    """On a worker: the model as it was before this node patched it (itself if this node did not patch it)."""
    return getattr(model, BASE_ATTR, model)


def _plain(settings: dict) -> dict:
    """Settings as builtins only, so a worker that has not imported this pack can unpickle them."""
    s = dict(settings)
    if s.get("mask") is not None:
        s["mask"] = asdict(s["mask"])
    prof = s.get("profile")
    if prof is not None:
        s["profile"] = dict(family=prof.family, hidden_size=prof.hidden_size, n_blocks=prof.n_blocks,
                            channels={b: list(c) for b, c in prof.channels.items()},
                            reference={b: list(r) for b, r in prof.reference.items()}, info=dict(prof.info),
                            fingerprint=prof.fingerprint.to_json() if prof.fingerprint is not None else None)
    return s


def worker_call(settings: dict) -> tuple:
    """(fn, *args) that every worker runs as ``fn(model, *args)`` (raylight's model_function_runner)."""
    pack_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return _ray_worker.apply_on_worker, pack_dir, __package__.rsplit(".", 1)[0], _plain(settings)


def worker_undo() -> tuple:
    """(fn, *args) that gives every worker its model back as it was before ``worker_call``."""
    return _ray_worker.restore_on_worker, __package__.rsplit(".", 1)[0]


# raylight's worker methods that sample its model (RayWorker in raylight/distributed_worker/ray_worker.py);
# tests/test_integration_ray.py checks this list against raylight's source
SAMPLING_METHODS = frozenset({"common_ksampler", "custom_sampler", "custom_sampler_advanced"})


class SteeredWorker:
    """A raylight worker's handle as this node hands it on: a sampling method called through it runs with STAS
    installed on the worker's model (installed just before, taken off just after); every other call passes
    straight through to the worker."""

    def __init__(self, handle, call: tuple):
        self._handle, self._call = handle, call

    def __getattr__(self, name):
        if name in ("_handle", "_call"):  # not set yet (a copy being made)
            raise AttributeError(name)
        attr = getattr(self._handle, name)
        return _SteeredMethod(self, attr) if name in SAMPLING_METHODS else attr

    def __eq__(self, other):
        return self._handle == getattr(other, "_handle", other)

    def __hash__(self):
        return hash(self._handle)

    def __repr__(self):
        return f"SteeredWorker({self._handle!r})"


class _SteeredMethod:
    def __init__(self, worker: SteeredWorker, method):
        self._worker, self._method = worker, method

    def options(self, *args, **kwargs):
        return _SteeredMethod(self._worker, self._method.options(*args, **kwargs))

    def remote(self, *args, **kwargs):
        ray, _ = _ray()
        handle = self._worker._handle
        try:  # installed and checked before the sampling call is queued: a refusal stops the run here
            ray.get(handle.model_function_runner.remote(*self._worker._call))
        except Exception as e:
            raise _worker_error(e) from None
        ref = self._method.remote(*args, **kwargs)
        handle.model_function_runner.remote(*worker_undo())  # runs after the sampling call, even a failed one
        return ref


def _ray():
    try:
        import ray
        from ray import cloudpickle
    except ImportError:
        raise ValueError(f"{NAME}: raylight is not installed (the Python package 'ray' is missing), so there are no "
                         "Ray workers to patch. Install raylight (ComfyUI Manager: 'Raylight'), or use STAS Model Patch "
                         "on a model loaded without raylight.") from None
    return ray, cloudpickle


NOT_CONNECTED = (f"{NAME}: ray_actors is not connected. Connect the RAY_ACTORS output of raylight's Ray Init Actor / "
                 "model loader.")
_UNLINKED = object()  # validate_inputs' ray_actors when no link feeds it


def _worker_error(e: BaseException) -> ValueError:
    """A worker's refusal as this node's error (a ValueError from STAS Model Patch's checks)."""
    cause = getattr(e, "cause", None) or e
    msg = str(cause).strip().splitlines()[-1] if str(cause).strip() else repr(cause)
    for prefix in ("ValueError: ", "STAS Model Patch: "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return ValueError(f"{NAME}: {msg}")


class StasModelPatchRay(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        inputs = [inp for inp in StasModelPatch.define_schema().inputs if inp.id != "model"]
        return io.Schema(
            node_id="STASModelPatchRay",
            display_name=NAME,
            category="model_patches/stas",
            description="STAS Model Patch for raylight (multi-GPU): patches the model on every Ray worker; exact under "
                        "sequence parallelism (USP), where each GPU holds part of the tokens. Needs raylight.",
            # optional, and an output node: ComfyUI then validates the node even without raylight (nothing can
            # feed or consume RAY_ACTORS there) and shows validate_inputs' message, not "Required input is missing"
            inputs=[RayActors.Input("ray_actors", optional=True,
                                    tooltip="Needed: RAY_ACTORS from raylight's model loader (every worker is patched).")]
                   + inputs,
            outputs=[RayActors.Output(tooltip="The same workers with STAS installed, for raylight's sampler.")],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, ray_actors=_UNLINKED) -> bool:
        """At queue time, before any node runs: raylight missing, or ray_actors not connected, stops the run with
        this node's message. ComfyUI hands a linked input here as None and an unlinked one not at all; it reports
        a returned message only for an input it handed over, so these are raised (shown as the node's error)."""
        _ray()
        if ray_actors is _UNLINKED:
            raise ValueError(NOT_CONNECTED)
        return True

    @classmethod
    def execute(cls, alpha, blend, blocks, channels, threshold, top_k, start_percent, end_percent, apply_to,
                ray_actors=None, mask=None, profile=None) -> io.NodeOutput:
        settings = dict(alpha=alpha, blend=blend, blocks=blocks, channels=channels, threshold=threshold, top_k=top_k,
                        start_percent=start_percent, end_percent=end_percent, apply_to=apply_to, mask=mask,
                        profile=profile)
        ray, cloudpickle = _ray()
        if ray_actors is None:
            raise ValueError(NOT_CONNECTED)
        with named_errors(NAME):  # STAS Model Patch's checks run on the workers; these need no model
            parse_channels(channels, threshold, top_k)
            workers = ray_actors.get("workers") if isinstance(ray_actors, dict) else None
            if not workers:
                raise ValueError("ray_actors holds no workers. Connect the RAY_ACTORS output of raylight's "
                                 "Ray Init Actor / model loader.")
        # Ray pickles functions of importable modules by reference, and workers cannot import this
        # pack by ComfyUI's name for it: send the stdlib-only worker function by value.
        cloudpickle.register_pickle_by_value(_ray_worker)
        handles = [getattr(w, "_handle", w) for w in workers]  # a STAS (Ray) node's workers: replaced, not stacked
        call = worker_call(settings)
        try:  # STAS's checks on every worker's model now, before sampling; the workers are left unpatched
            ray.get([w.model_function_runner.remote(*call) for w in handles])
        except Exception as e:  # ray.exceptions.RayTaskError wrapping the worker's ValueError
            raise _worker_error(e) from None
        finally:
            ray.get([w.model_function_runner.remote(*worker_undo()) for w in handles])
        return io.NodeOutput({**ray_actors, "workers": [SteeredWorker(w, call) for w in handles]})

