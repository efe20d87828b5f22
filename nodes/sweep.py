"""STAS Sweep: renders the unpatched baseline and a small grid of STAS settings with one seed, decodes and
scores each (stas_core.sweep), and returns the winner as STAS Model Patch would patch it, with a labelled
grid, a side-by-side video and the table. docs/sweep.md."""
from __future__ import annotations

import json
import logging
import math
import os
import time

import numpy as np
import torch
from comfy_api.latest import io, ui

from ..stas_core import plot, seams
from ..stas_core import sweep as sw
from ..stas_core.profile import MAProfile
from ..stas_core.schedule import SigmaWindow
from .families import family_of, select_blocks
from .fingerprint import model_fingerprint, node_model_file
from .hooks import OuterSample
from .save_ma_profile import profile_path
from .stas_model_patch import StasModelPatch
from .types import StasMask, named_errors

log = logging.getLogger("comfyui-stas")
NAME = "STAS Sweep"
TILE = 192
"""Height in pixels of a grid tile."""


def stas_settings(v: sw.Variant, mask=None) -> dict:
    """STAS Model Patch's inputs for variant ``v``: its alpha, blocks and window, the rest at the node's defaults."""
    s = {i.id: i.default for i in StasModelPatch.define_schema().inputs if getattr(i, "default", None) is not None}
    s.update(alpha=v.alpha, blocks=v.blocks, start_percent=v.start, end_percent=v.end, mask=mask)
    return s


def _frames(images: torch.Tensor) -> torch.Tensor:
    """VAE Decode's reshape: a video VAE's [B, T, H, W, C] -> frames [B*T, H, W, C]."""
    return images.reshape(-1, *images.shape[-3:]) if images.ndim == 5 else images


def _chunking(frames: int, latent_frames: int):
    """(temporal_compression, causal first frame) of a decode of ``latent_frames`` into ``frames``."""
    if latent_frames > 1 and (frames - 1) % (latent_frames - 1) == 0 and frames > latent_frames:
        return (frames - 1) // (latent_frames - 1), True
    if latent_frames > 1 and frames % latent_frames == 0 and frames > latent_frames:
        return frames // latent_frames, False
    raise ValueError(f"{NAME}: the VAE decoded {latent_frames} latent frames into {frames} pixel frames, which is no "
                     "video VAE's chunking; connect the VAE that belongs to the model.")


def _tile(frames: torch.Tensor, k: int, causal: bool) -> np.ndarray:
    """The frame right after the middle VAE chunk seam, scaled to TILE pixels high."""
    lay = seams.seam_layout(len(frames), k, causal)
    pairs = np.nonzero(lay.is_seam)[0]
    f = frames[int(pairs[len(pairs) // 2]) + 1 if len(pairs) else 0, :, :, :3].float()
    h, w = f.shape[:2]
    size = (TILE, max(1, round(w * TILE / h)))
    f = torch.nn.functional.interpolate(f.permute(2, 0, 1)[None], size=size, mode="area")[0].permute(1, 2, 0)
    return f.clamp(0, 1).numpy()


def grid_image(tiles, labels, colours, cols: int = 0) -> np.ndarray:
    """Tiles in rows under a caption bar each (labels drawn when Pillow is there)."""
    n = len(tiles)
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    th, tw = tiles[0].shape[:2]
    bar, gap = 49, 4
    img = np.full((rows * (th + bar + gap) + gap, cols * (tw + gap) + gap, 3), 0.12, dtype=np.float32)
    text = plot.Labels()
    for i, (t, lab, col) in enumerate(zip(tiles, labels, colours)):
        r, c = divmod(i, cols)
        y, x = gap + r * (th + bar + gap), gap + c * (tw + gap)
        img[y:y + bar, x:x + tw] = np.asarray(col, dtype=np.float32) * 0.35
        img[y + bar:y + bar + th, x:x + tw] = t[:, :tw]
        for j, line in enumerate(lab.split("\n")[:3]):
            text.add(x + 4, y + 3 + 15 * j, line, colour=(1, 1, 1), size=11)
    return text.render(img)


def side_by_side(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Frames of ``a`` and ``b`` next to each other, with a 4-pixel dark gap."""
    n, h = min(len(a), len(b)), min(a.shape[1], b.shape[1])
    gap = torch.full((n, h, 4, 3), 0.1)
    return torch.cat([a[:n, :h, :, :3].float(), gap, b[:n, :h, :, :3].float()], dim=2)


class StasSweep(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="STASSweep",
            display_name="STAS Sweep",
            category="model_patches/stas",
            description="Renders the unpatched baseline and each STAS setting of a small grid with one seed, scores each "
                        "decoded video for VAE seams and flicker, and returns the best setting's model (docs/sweep.md).",
            inputs=[
                io.Model.Input("model", tooltip="The video model to tune (cloned, never changed)."),
                io.Conditioning.Input("positive", tooltip="The positive prompt, as for a KSampler."),
                io.Conditioning.Input("negative", tooltip="The negative prompt, as for a KSampler."),
                io.Latent.Input("latent_image", tooltip="An empty video latent at the preview size and length."),
                io.Vae.Input("vae", tooltip="The model's VAE, to decode each render."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="One noise seed for every render."),
                io.Int.Input("steps", default=10, min=1, max=10000, tooltip="Steps of each preview render."),
                io.Float.Input("cfg", default=5.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip="CFG of each render."),
                io.Combo.Input("sampler_name", options=_samplers(), default="euler", tooltip="Sampler of each render."),
                io.Combo.Input("scheduler", options=_schedulers(), default="simple", tooltip="Scheduler of each render."),
                io.String.Input("alphas", default="0.5, 1.0", tooltip="alpha values to try, comma-separated."),
                io.String.Input("blocks", default="middle", tooltip="Block choices to try, ';'-separated (like 'middle;10-20')."),
                io.String.Input("windows", default="0-0.2, 0-0.4", tooltip="Windows start-end to try, comma-separated."),
                io.Float.Input("tolerance", default=0.1, min=0.0, max=1.0, step=0.01,
                               tooltip="Largest loss of motion or sharpness a winner may have."),
                io.String.Input("preset", default="", tooltip="MA profile name to save the winner as (empty = no file)."),
                StasMask.Input("mask", optional=True, tooltip="Tokens to steer, from Boundary Mask Builder (none = the default)."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The winner patched as STAS Model Patch would, or the input if none won."),
                io.Image.Output(display_name="grid", tooltip="One frame per render after the middle VAE seam, labelled."),
                io.Image.Output(display_name="comparison", tooltip="Baseline (left) and winner (right), frame by frame."),
                io.String.Output(display_name="table", tooltip="Every render's scores, the winner marked."),
            ],
            hidden=[io.Hidden.unique_id, io.Hidden.prompt],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, vae, seed, steps, cfg, sampler_name, scheduler,
                alphas, blocks, windows, tolerance, preset="", mask=None) -> io.NodeOutput:
        import comfy.sample
        import comfy.samplers
        import comfy.utils

        with named_errors(NAME):
            sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps)
            sweep = Sweep.prepare(model, latent_image, alphas, blocks, windows, preset, mask, sigmas.tolist())
        lat = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        noise = comfy.sample.prepare_noise(lat, seed, latent_image.get("batch_index"))

        def render(m, callback):
            return comfy.sample.sample(m, noise, steps, cfg, sampler_name, scheduler, positive, negative, lat,
                                       noise_mask=latent_image.get("noise_mask"), callback=callback,
                                       disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        return sweep.run(render, vae, tolerance, node_model_file(cls))


class StasSweepCustom(io.ComfyNode):
    """STAS Sweep for custom-sampler graphs: the guider, sampler, sigmas and noise of SamplerCustomAdvanced."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        base = StasSweep.define_schema()
        grid_inputs = [i for i in base.inputs if i.id in ("vae", "alphas", "blocks", "windows", "tolerance", "preset",
                                                            "mask")]
        return io.Schema(
            node_id="STASSweepCustom",
            display_name="STAS Sweep (Custom Sampler)",
            category="model_patches/stas",
            description="STAS Sweep with SamplerCustomAdvanced's inputs: the guider's model is swept (docs/sweep.md).",
            inputs=[
                io.Noise.Input("noise", tooltip="The noise, as for SamplerCustomAdvanced."),
                io.Guider.Input("guider", tooltip="The guider whose model is swept (never changed)."),
                io.Sampler.Input("sampler", tooltip="The sampler, as for SamplerCustomAdvanced."),
                io.Sigmas.Input("sigmas", tooltip="The sigmas of each preview render."),
                io.Latent.Input("latent_image", tooltip="An empty video latent at the preview size and length."),
                *grid_inputs,
            ],
            outputs=base.outputs,
            hidden=[io.Hidden.unique_id, io.Hidden.prompt],
        )

    @classmethod
    def execute(cls, noise, guider, sampler, sigmas, latent_image, vae, alphas, blocks, windows, tolerance, preset="",
                mask=None) -> io.NodeOutput:
        import copy

        import comfy.sample
        import comfy.utils

        model = guider.model_patcher
        with named_errors(NAME):
            sweep = Sweep.prepare(model, latent_image, alphas, blocks, windows, preset, mask, sigmas.tolist())
        lat = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        lat_dict = {**latent_image, "samples": lat}

        def render(m, callback):
            g = guider
            if m is not model:   # the same guider (its conds and settings) on the variant's model
                g = copy.copy(guider)
                g.model_patcher, g.model_options = m, m.model_options
            return g.sample(noise.generate_noise(lat_dict), lat, sampler, sigmas,
                            denoise_mask=latent_image.get("noise_mask"), callback=callback,
                            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=noise.seed)
        return sweep.run(render, vae, tolerance, node_model_file(cls))


class Sweep:
    """One sweep: its variants, each patched by STAS Model Patch before the first render, and their results."""

    def __init__(self, model, latent_frames, steps, fam, patched, results, path):
        self.model, self.latent_frames, self.steps, self.fam = model, latent_frames, steps, fam
        self.patched, self.results, self.path = patched, results, path

    @classmethod
    def prepare(cls, model, latent_image, alphas, blocks, windows, preset, mask, sigmas) -> "Sweep":
        """Every input checked and every variant patched (a ValueError before the first render)."""
        variants = sw.grid(sw.parse_floats(alphas, "alphas"), sw.parse_blocks_list(blocks), sw.parse_windows(windows))
        lat = latent_image["samples"]
        if getattr(lat, "is_nested", False) or lat.ndim != 5 or lat.shape[2] < 2:
            raise ValueError(f"the latent has shape {list(getattr(lat, 'shape', []))}; the sweep needs one video "
                             "latent [B, C, T, H, W] with at least 2 latent frames (VAE seams lie between them). "
                             "Connect an empty video latent of 5 or more pixel frames.")
        dm = model.get_model_object("diffusion_model")
        fam = family_of(dm)
        path = preset_path(preset)
        ms = model.get_model_object("model_sampling")
        steps = len(sigmas) - 1
        results, patched = [], []
        for v in variants:
            try:
                patched.append(StasModelPatch.execute(model, **stas_settings(v, mask))[0])
            except ValueError as e:   # STAS Model Patch's own check, said for this variant
                raise ValueError(f"variant '{v.label()}': {str(e).removeprefix('STAS Model Patch: ')}") from None
            n = SigmaWindow.from_percents(v.start, v.end, ms.percent_to_sigma).steps_in(sigmas)
            results.append(sw.Result(v, n, len(select_blocks(fam, dm, v.blocks)),
                                     flag=None if n else f"steers no step of {steps}, not rendered"))
        return cls(model, int(lat.shape[2]), steps, fam, patched, results, path)

    def run(self, render, vae, tolerance, checkpoint) -> io.NodeOutput:
        """Render the baseline and every variant with ``render(model, callback)``, then decode, score and pick."""
        import comfy.model_management
        import comfy.utils

        model, patched, results = self.model, self.patched, self.results
        # A variant whose window steers no step of the run would render the baseline again: it is not rendered.
        renders = [model] + [m for m, r in zip(patched, results) if r.steered_steps]
        total = len(renders) * self.steps
        pbar = comfy.utils.ProgressBar(total)   # over every render's steps
        at = [0]

        def callback(step, x0, x, total_steps):
            comfy.model_management.throw_exception_if_processing_interrupted()
            pbar.update_absolute(min(total, at[0] * self.steps + step + 1), total)

        # 1. every render with one loaded model (a STAS clone patches no weight: nothing reloads).
        rendered, t0 = [], time.perf_counter()
        for i, m in enumerate(renders):
            comfy.model_management.throw_exception_if_processing_interrupted()
            at[0] = i
            rendered.append(render(m, callback))
            if i == 0:
                took = time.perf_counter() - t0
                log.info("%s: %d variants after the baseline; the baseline took %.1f s, so about %.0f s more to render.",
                         NAME, len(renders) - 1, took, took * (len(renders) - 1))
        variant_latents = iter(rendered[1:])
        latents = rendered[:1] + [next(variant_latents) if r.steered_steps else None for r in results]
        # 2. decode and score each (one VAE load); only the baseline's and the best qualified frames are kept.
        dev = comfy.model_management.get_torch_device()   # scored where it is fast (the decode comes back on the CPU)
        base_frames = _frames(vae.decode(latents[0]))
        k, causal = _chunking(len(base_frames), self.latent_frames)
        base = sw.measure(base_frames.to(dev), k, causal)
        tiles = [_tile(base_frames, k, causal)]
        best, best_frames = None, None
        for i, r in enumerate(results):
            comfy.model_management.throw_exception_if_processing_interrupted()
            if latents[i + 1] is None:   # not rendered (its window steers no step): flagged, no score
                tiles.append(tiles[0])
                continue
            frames = _frames(vae.decode(latents[i + 1]))
            latents[i + 1] = None
            r.scores = sw.measure(frames.to(dev), k, causal)
            tiles.append(_tile(frames, k, causal))
            sw.assess(r, base, tolerance)
            if sw.beats(r, None if best is None else results[best]):   # sw.judge's pick, keeping only its frames
                best, best_frames = i, frames
        winner = best
        text = sw.table(base, results, winner, tolerance)
        if self.path is not None:
            text += "\n" + (save_preset(self.path, model, self.fam, patched[winner], results[winner], checkpoint)
                            if winner is not None else "No preset saved: no variant won.")
        log.info("%s: %s", NAME, text.splitlines()[-2])

        labels = ["unpatched baseline\nscore 1.000"] + [   # three short lines: tiles are as narrow as the video
            f"alpha {r.variant.alpha:g}, blocks {r.variant.blocks}\nwindow {r.variant.start:g}-{r.variant.end:g}" +
            (f", score {r.score:.3f}" if r.scores is not None else "") +
            (f"\n{r.flag}" if r.flag else "\nWINNER" if i == winner else "") for i, r in enumerate(results)]
        colours = [(0.5, 0.5, 0.5)] + [(0.2, 0.8, 0.3) if i == winner else (0.9, 0.2, 0.2) if r.flag else
                                       (0.3, 0.45, 0.9) for i, r in enumerate(results)]
        grid = torch.from_numpy(grid_image(tiles, labels, colours))[None]
        out_model = patched[winner] if winner is not None else model
        comparison = side_by_side(base_frames, best_frames if best_frames is not None else base_frames)
        return io.NodeOutput(out_model, grid, comparison, text, ui=ui.PreviewText(text))


def preset_path(name: str):
    """Where the winner's preset goes (None: not saved); a file there must be an earlier sweep's preset."""
    if not (name or "").strip():
        return None
    path = profile_path(name, NAME, "preset")
    if os.path.exists(path):
        try:
            ours = "preset" in MAProfile.load(path).info
        except Exception:  # noqa: BLE001  (not a profile at all)
            ours = False
        if not ours:
            raise ValueError(f"preset: {path} exists and is no STAS Sweep preset; choose another preset name.")
    return path


def save_preset(path: str, model, fam, winner_model, result: sw.Result, checkpoint) -> str:
    """The winner as an MA profile: its settings, the channels it steered per block, the model's fingerprint."""
    import comfy.patcher_extension as pe
    wrappers = [w for ws in winner_model.wrappers.get(pe.WrappersMP.OUTER_SAMPLE, {}).values() for w in ws]
    plan = [w.plan for w in wrappers if isinstance(w, OuterSample)][-1]   # the sweep's, installed last
    dm = model.get_model_object("diffusion_model")
    channels = dict(plan.detected) if plan.auto else {r.flat: tuple(plan.fixed_channels(r)) for r in plan.blocks}
    if not channels:
        return "No preset saved: the winner's run detected no channel."
    v = result.variant
    info = {"model": fam.name, "made_by": NAME, "score": f"{result.score:.4f}",
            "preset": json.dumps({"alpha": v.alpha, "blocks": v.blocks, "start_percent": v.start,
                                  "end_percent": v.end})}
    if checkpoint:
        info["checkpoint"] = checkpoint
    prof = MAProfile(fam.name, fam.hidden_size(dm), len(fam.blocks(dm)), channels, {}, info, model_fingerprint(model))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    prof.save(path)
    return f"Preset saved: {path} ({v.label()}; channels {sorted({c for cs in channels.values() for c in cs})})."


def _samplers():
    import comfy.samplers
    return list(comfy.samplers.KSampler.SAMPLERS)


def _schedulers():
    import comfy.samplers
    return list(comfy.samplers.KSampler.SCHEDULERS)
