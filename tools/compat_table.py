"""The compatibility matrix of docs/compatibility.md: STAS Model Patch and the MA Recorder beside the nodes
ComfyUI ships for video models. One list (PARTNERS, REFERENCED) drives both the tests
(tests/test_integration_compat.py parametrizes over PARTNERS) and the table, which sits in
docs/compatibility.md between the ``<!-- compat table -->`` and ``<!-- /compat table -->`` markers;
test_integration_compat.py::test_doc_table_is_generated checks the two agree.

    python3 tools/compat_table.py [--write]

Without --write it prints the table; with --write it rewrites the block in docs/compatibility.md.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Tuple

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "compatibility.md"
START, END = "<!-- compat table -->", "<!-- /compat table -->"
TEST = "tests/test_integration_compat.py"
MODELS = {"wan": "Wan 2.1", "ltx2": "LTX-2"}
CFG_NOTE = "It changes how the sampler combines the passes' outputs; STAS changes block outputs inside a pass."


@dataclass(frozen=True)
class Partner:
    """A node tested beside STAS Model Patch and the MA Recorder by tests/test_integration_compat.py."""

    id: str                      # the pytest id
    node: str                    # ComfyUI node id (NODE_CLASS_MAPPINGS)
    module: str                  # its comfy_extras file
    model: str                   # "wan" or "ltx2" (tiny random-weight model of ComfyUI's own class)
    since: str                   # the oldest tested ComfyUI (0.3.64, 0.8.0, 0.33.0) where the pair is tested
    note: str                    # what a user should know, for the table
    kind: str = "patch"          # "patch" (MODEL -> MODEL, both node orders), "cache", "guider" (takes the MODEL)
    inputs: Dict[str, object] = field(default_factory=dict)   # set on the node beyond its defaults
    changes: bool = True         # the node changes the tiny model's result (so (b) shows it is at work)
    older: str = ""              # why the pair cannot work on a ComfyUI before ``since`` that has the node (tested)
    frames: int = 3              # latent frames (a node that splits the video into windows needs more)

    @property
    def orders(self) -> Tuple[str, ...]:
        return ("guider",) if self.kind == "guider" else ("before", "after")


PARTNERS: Tuple[Partner, ...] = (
    Partner("easycache", "EasyCache", "nodes_easycache.py", "wan", "0.3.64", kind="cache",
            inputs=dict(reuse_threshold=3.0, start_percent=0.0),
            note="A step it skips runs no block, so STAS steers nothing in it. Before the run STAS names the steered "
                 "steps the cache may skip, after it the ones it skipped; the MA Recorder records only the computed "
                 "steps and names the skipped ones. To steer every step of the window, start the cache after it "
                 "(EasyCache `start_percent` >= STAS `end_percent`)."),
    Partner("lazycache", "LazyCache", "nodes_easycache.py", "wan", "0.3.64", kind="cache",
            inputs=dict(reuse_threshold=3.0, start_percent=0.0),
            note="As EasyCache (a skipped step does not call the model at all)."),
    Partner("easycache_ltx2", "EasyCache", "nodes_easycache.py", "ltx2", "0.33.0", kind="cache",
            inputs=dict(reuse_threshold=3.0, start_percent=0.0),
            note="As on Wan; the audio stream is cached with the video.",
            older="ComfyUI 0.8.0's EasyCache fails on LTX-2 by itself, with or without STAS (it slices the (video, "
                  "audio) pair as one tensor: `TypeError: list indices must be integers or slices, not tuple`). Update "
                  "ComfyUI, or use LazyCache."),
    Partner("lazycache_ltx2", "LazyCache", "nodes_easycache.py", "ltx2", "0.8.0", kind="cache",
            inputs=dict(reuse_threshold=3.0, start_percent=0.0), note="As on Wan."),
    Partner("nag", "NAGuidance", "nodes_nag.py", "wan", "0.33.0", changes=False,
            note="NAG works through `attn1_output_patch`, which Wan's attention does not read (ComfyUI 0.33.0): "
                 "the node changes nothing on Wan, with or without STAS."),
    Partner("nag_ltx2", "NAGuidance", "nodes_nag.py", "ltx2", "0.33.0", changes=False,
            note="As on Wan: LTX-2's attention does not read `attn1_output_patch` either."),
    Partner("apg", "APG", "nodes_apg.py", "wan", "0.3.64", note=CFG_NOTE),
    Partner("tcfg", "TCFG", "nodes_tcfg.py", "wan", "0.3.64", note=CFG_NOTE),
    Partner("cfgzerostar", "CFGZeroStar", "nodes_cfg.py", "wan", "0.3.64", note=CFG_NOTE),
    Partner("cfgnorm", "CFGNorm", "nodes_cfg.py", "wan", "0.3.64", note=CFG_NOTE),
    Partner("mahiro", "Mahiro", "nodes_mahiro.py", "wan", "0.3.64", note=CFG_NOTE),
    Partner("rescalecfg", "RescaleCFG", "nodes_model_advanced.py", "wan", "0.3.64", note=CFG_NOTE),
    Partner("modelsamplingsd3", "ModelSamplingSD3", "nodes_model_advanced.py", "wan", "0.3.64",
            inputs=dict(shift=3.0),
            note="STAS maps its window through the shift the sampler really uses, with the node before or after "
                 "it (the steps steered: `tests/test_integration_window_guiders.py`)."),
    Partner("modelsamplingltxv", "ModelSamplingLTXV", "nodes_lt.py", "ltx2", "0.8.0",
            note="As ModelSamplingSD3 (its shift follows the latent's size when given one)."),
    Partner("context_windows", "WanContextWindowsManual", "nodes_context_windows.py", "wan", "0.3.64",
            inputs=dict(context_length=9, context_overlap=4), frames=7,
            note="Each window is steered as a video of its own frames (its first frame, its boundaries; M over the "
                 "window); the MA Recorder fills every frame from the windows."),
    Partner("attn_multiply_self", "UNetSelfAttentionMultiply", "nodes_attention_multiply.py", "ltx2", "0.8.0",
            inputs=dict(q=0.8, k=1.2, v=1.1, out=0.9),
            note="Scales the `attn1` weights of LTX-Video / LTX-2."),
    Partner("attn_multiply_self_wan", "UNetSelfAttentionMultiply", "nodes_attention_multiply.py", "wan", "0.3.64",
            inputs=dict(q=0.8, k=1.2, v=1.1, out=0.9), changes=False,
            note="Wan's attention is `self_attn` / `cross_attn`, not `attn1` / `attn2`: the attention multiply nodes "
                 "change nothing on Wan, with or without STAS."),
    Partner("attn_multiply_cross", "UNetCrossAttentionMultiply", "nodes_attention_multiply.py", "ltx2", "0.8.0",
            inputs=dict(q=0.8, k=1.2, v=1.1, out=0.9), note="As the self-attention one (`attn2`)."),
    Partner("ltxv_stg", "LTXVSpatioTemporalGuidance", "nodes_lt.py", "ltx2", "0.33.0", inputs=dict(blocks="0"),
            note="Its extra pass carries the positive prompt, so `apply_to` cond steers it too (as the pass it "
                 "guides away from)."),
    Partner("ltxv_modality", "LTXVModalityGuidance", "nodes_lt.py", "ltx2", "0.33.0",
            note="Its extra (uncoupled) pass carries the positive prompt, so `apply_to` cond steers it too."),
    Partner("multigpu", "MultiGPU_WorkUnits", "nodes_multigpu.py", "wan", "0.33.0", changes=False,
            note="The node's clones carry STAS. On the CPU it finds no second device, so the run is not split "
                 "(the split: the row MultiGPU CFG Split, two devices)."),
    Partner("ltxv_dual_cfg", "LTXVDualCFGGuider", "nodes_lt.py", "ltx2", "0.33.0", kind="guider",
            note="STAS knows its passes (positive, negative), as CFGGuider's."),
)

REFERENCED: Tuple[Tuple[str, str, str, str, str, str], ...] = (
    # (node, comfy_extras file, model, oldest tested ComfyUI with it, tests, note)
    ("SkipLayerGuidanceDiT", "nodes_slg.py", "Wan 2.1", "0.3.64",
     "tests/test_integration_behaviour.py::test_chaining_with_skip_layer_guidance_either_order",
     "Both replace the same block: STAS chains it, in either order."),
    ("ContextWindowsManual", "nodes_context_windows.py", "Wan 2.1", "0.3.64",
     "tests/test_integration_behaviour.py::test_context_windows_mask_from_each_window, "
     "tests/test_integration_visualizer.py::test_context_windows_fill_every_frame",
     "As WanContextWindowsManual."),
    ("TorchCompileModel", "nodes_torch_compile.py", "Wan 2.1", "0.3.64",
     "tests/test_integration_compile.py, "
     "tests/test_integration_compat.py::test_cache_under_torch_compile_says_only_the_pre_run_line",
     "Either order; no recompile for new settings ([performance.md](performance.md)). Beside a step cache, "
     "STAS cannot see which steps a compiled model skipped and does not say it after the run."),
    ("MultiGPU CFG Split, two devices", "nodes_multigpu.py", "Wan 2.1", "0.33.0",
     "tests/test_integration_behaviour.py::test_concurrent_cond_and_uncond_calls_from_two_threads",
     "Each pass is steered on the device it runs on ([multigpu.md](multigpu.md)): tested as the node runs the "
     "passes, from two threads at once, on the CPU; not run on two GPUs."),
)


def _since(version: str) -> str:
    return "all three" if version == "0.3.64" else f"{version} and later"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table() -> str:
    """The markdown block between the markers."""
    lines = [f"| node (`comfy_extras/`) | model | node order | ComfyUI | checks (`{TEST}`, or the test named) "
             "| result |",
             "|---|---|---|---|---|---|"]
    for p in PARTNERS:
        order = "STAS before the guider" if p.kind == "guider" else "both"
        checks = "a, b, c, d" if p.kind == "cache" else "a, b, c"
        note = f"{p.note} {p.older}" if p.older else p.note
        lines.append(f"| {p.node} (`{p.module}`) | {MODELS[p.model]} | {order} | {_since(p.since)} | "
                     f"{checks} (`{p.id}`{', `older`' if p.older else ''}) | {_cell(note)} |")
    for node, module, model, since, tests, note in REFERENCED:
        refs = ", ".join(f"`{t.strip()}`" for t in tests.split(","))
        lines.append(f"| {node} (`{module}`) | {model} | both | {_since(since)} | {refs} | {_cell(note)} |")
    return "\n".join(lines)


def block() -> str:
    return f"{START}\n{table()}\n{END}"


def doc_block(text: str) -> str:
    """The block as it stands in docs/compatibility.md (markers included), or '' without markers."""
    if START not in text or END not in text:
        return ""
    i = text.index(START)
    return text[i:text.index(END, i) + len(END)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="rewrite the table in docs/compatibility.md")
    args = ap.parse_args()
    if not args.write:
        print(table())
        return 0
    text = DOC.read_text()
    old = doc_block(text)
    if not old:
        print(f"{DOC}: no {START} ... {END} markers", file=sys.stderr)
        return 1
    DOC.write_text(text.replace(old, block()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
