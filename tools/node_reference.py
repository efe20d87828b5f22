"""The node reference, generated from a real ComfyUI server's /object_info so that every input,
default and tooltip in the docs is exactly what the nodes declare. One rendering, two places:

- docs/nodes.md, between the ``<!-- node-reference:start -->`` and ``<!-- node-reference:end -->``
  markers (linked from the README);
- web/docs/<NodeId>.md, one page per node: ComfyUI's frontend fetches
  ``/extensions/<pack>/docs/<NodeId>.md`` from the pack's WEB_DIRECTORY and shows it as the node's help.

tests/test_packaging.py checks both against a live server on every testbed. --write also copies
README's troubleshooting rows from docs/troubleshooting.md (README_ROWS picks them; the messages
themselves are checked against the errors the pack raises by tests/test_errors.py).

    python3 tools/node_reference.py --comfyui /path/to/ComfyUI [--python /path/to/python] [--write]

Without --write it prints docs/nodes.md's block; with --write it rewrites that block and every
web/docs/<NodeId>.md (and deletes pages of nodes that no longer exist).
"""
from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NODES_MD = ROOT / "docs" / "nodes.md"
WEB_DOCS = ROOT / "web" / "docs"
START, END = "<!-- node-reference:start -->", "<!-- node-reference:end -->"
README = ROOT / "README.md"
TROUBLESHOOTING_MD = ROOT / "docs" / "troubleshooting.md"
# The rows of docs/troubleshooting.md README shows (a row whose first cell holds the key), in this order.
README_ROWS = ("does not support <X> models", "blocks: block N does not exist",
               "STAS Model Patch: the sampler got a latent", "will steer nothing in this run",
               "no channel reached the threshold")
PACK_MODULE = "custom_nodes.comfyui-stas"
URLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]

# What a tooltip leaves out (a tooltip says one short clause: tests/test_tooltips.py), per node and
# input or output name: rendered under the node's tables as "Details". Keys must be real names.
_STAS_NOTES = {
    "alpha": "Steered values move toward alpha times the largest \\|h\\| of the hidden state, keeping their sign "
             "(docs/method.md); 1.0 is the paper's setting.",
    "blend": "1.0 replaces the steered values by the target (the paper); 0.0 leaves them unchanged (off); "
             "in between mixes the two linearly.",
    "blocks": "Flat block indices as the model runs them. `middle` is the paper's choice (15 of Wan 2.1 1.3B's 30 "
              "blocks); HunyuanVideo counts its double-stream blocks first, then the single-stream ones.",
    "channels": "`auto` detects the massive channels at the first steered step of each run (per block); a list "
                "like `12,407` steers those channels everywhere.",
    "threshold": "With `auto` channels: a channel is massive when its peak \\|h\\| is at least this many times "
                 "the mean \\|h\\| of the hidden state.",
    "top_k": "With `auto` channels: at most this many of the strongest massive channels are steered.",
    "start_percent": "A fraction of denoising, mapped to sigma by the model's sampling; the start is inclusive.",
    "end_percent": "Exclusive. 0.4 is the paper's window: the first 20 of 50 steps with the simple scheduler. A "
                   "window that holds no step steers nothing.",
    "apply_to": "`cond` = the positive prompt's pass (DualCFGGuider's cond1), `uncond` = the negative's, "
                "`both` = every pass.",
    "mask": "Without a mask: every token of the first latent frame plus one head and one tail token row of "
            "each later latent frame (the paper's token sets, docs/method.md).",
    "profile": "The profile's calibrated channels replace auto detection, so `channels` must stay `auto`; a profile "
               "is refused on any model but the one it was recorded on (weight fingerprint).",
}
NOTES: dict[str, dict[str, str]] = {
    "STASModelPatch": {"model": "Any model of a supported family (docs/models.md); the node patches a clone.",
                       **_STAS_NOTES},
    "STASBoundaryMaskBuilder": {
        "first_frame": "The first latent frame carries the largest massive activations.",
        "boundaries": "The head and tail tokens of each later latent frame sit at the temporal chunk boundaries.",
        "unit": "`rows`: token rows of the patchified frame (W' tokens each); `tokens`: single tokens; "
                "`fraction`: a 0..1 share of the frame.",
        "latent": "For example from EmptyHunyuanLatentVideo or WanImageToVideo; the mask itself does not need it.",
        "patch_t": "1 for every supported model but CogVideoX 1.5, which has 2.",
        "patch_hw": "2 for Wan, HunyuanVideo, CogVideoX, Kandinsky 5 and Mochi; 1 for HunyuanVideo 1.5, "
                    "LTX-Video and LTX-2.",
        "preview": "A legend names the colours: red first frame, orange head, blue tail, dark = not steered; blank "
                   "without a latent.",
    },
    "STASMARecorder": {
        "model": "Any model of a supported family (docs/models.md); after STAS Model Patch it records "
                 "before and after steering.",
        "blocks": "As STAS Model Patch's `blocks` (HunyuanVideo: double-stream blocks first).",
        "steps": "Steps of this sampler's schedule; steps past the end are skipped.",
        "record": "As STAS Model Patch's `apply_to`; `both` keeps twice the memory.",
        "channels": "`auto` keeps the `top_k` channels by peak / mean at each block's first recorded step.",
        "token_stride": "The first and last row and column of each frame are always kept; 0 = auto: all tokens "
                        "up to 32768 per call.",
        "max_memory_mb": "A run that would exceed the cap is refused before its first step.",
        "recording": "Give it, with the sampler's LATENT, to MA Visualizer or Save MA Profile.",
    },
    "STASMAVisualizer": {
        "latent": "The LATENT output of the sampler that ran the MA Recorder's MODEL: it picks that run's recording "
                  "and makes this node run after sampling.",
        "block": "The flat index as typed on the recorder; negative counts from the end.",
        "step": "Massive activations and steering are strongest early, hence the default 0.",
        "chunk": "The CFG pass (`cond`, `uncond`), which MA Recorder's `record` must have kept; the input's id "
                 "stays `chunk`, which saved workflows name.",
        "channel": "`max` shows each token's largest \\|h\\| over the recorded MA channels.",
        "threshold": "As STAS Model Patch's auto channels: peak \\|h\\| at least this many times the mean \\|h\\|.",
        "export": "Saves the recording (safetensors) and the summary (JSON); a counter is appended to the prefix.",
        "mask": "For example STAS's mask; without one, one token row at each end of every later frame.",
        "profile": "Red first frame, orange head, blue tail, grey interior; lines at the latent-frame boundaries.",
        "heatmaps": "H' x W' kept tokens per latent frame.",
        "hierarchy": "First-frame, boundary and interior tokens.",
        "steering": "Grey before, red after steering; needs the recorder placed after STAS Model Patch.",
        "summary": "Also the mean magnitude of first-frame, boundary and interior tokens and their ratios.",
    },
    "STASSaveMAProfile": {
        "filename": "Letters, digits, `-`, `_`, `.` and `/` for subfolders of ComfyUI/models/stas_profiles.",
        "threshold": "A block with no massive channel is an error.",
    },
    "STASLoadMAProfile": {
        "profile_name": "From models/stas_profiles or a `stas_profiles` path of extra_model_paths.yaml.",
        "profile": "STAS Model Patch needs `channels` at `auto` to use it, and refuses it on any model but the "
                   "recorded one (weight fingerprint).",
    },
    "STASTemporalSeamMeter": {
        "images": "Not trimmed or interpolated, so the VAE's chunk seams stay where the meter expects them.",
        "images_b": "Same length and size, for example the same seed without STAS; drawn in orange.",
        "temporal_compression": "4 for Wan, HunyuanVideo, CogVideoX and Kandinsky 5; 6 for Mochi; 8 for LTX. With 4, "
                                "seams sit between frames 4k and 4k+1.",
        "causal_first_frame": "On for causal VAEs (Wan, HunyuanVideo, CogVideoX, LTX, Mochi); off = every latent "
                              "frame decodes to `temporal_compression` frames.",
        "flag_contrast": "A seam stands out when its difference is at least this many times the median within-chunk "
                         "pair of its two neighbouring chunks.",
        "motion_compensation": "The shift is a camera pan; brightness changes are kept.",
        "analysis_size": "Frames are area-averaged to this size; the flicker score always uses full resolution.",
        "plot": "Grey columns at chunk seams; with `images_b`, both curves.",
        "summary": "Also the largest change inside a chunk, and A - B with `images_b`.",
        "seam_ratio": "Mean seam-pair difference / mean within-chunk difference; higher = seams stand out.",
    },
    "STASModelPatchRay": {
        "ray_actors": "From raylight's model loader or another raylight patch node. Needed: it is optional only so that "
                      "queueing without raylight says what is missing.",
        **_STAS_NOTES,
    },
}


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _type(spec) -> str:
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    options = kind if isinstance(kind, list) else opts.get("options") if kind == "COMBO" else None
    if options is not None:
        return "one of " + ", ".join(f"`{o}`" for o in options)
    rng = ""
    if kind in ("INT", "FLOAT") and "min" in opts and "max" in opts:
        rng = f" {opts['min']:g}..{opts['max']:g}" if kind == "FLOAT" else f" {opts['min']}..{opts['max']}"
    return f"{kind}{rng}"


def _default(spec) -> str:
    opts = spec[1] if len(spec) > 1 else {}
    if "default" not in opts:
        return "(connect)" if isinstance(spec[0], str) and spec[0].isupper() and spec[0] not in (
            "INT", "FLOAT", "STRING", "BOOLEAN", "COMBO") else ""
    d = opts["default"]
    return f"`{str(d).lower() if isinstance(d, bool) else d}`"


def pack_nodes(object_info: dict) -> list[tuple[str, dict]]:
    """This pack's nodes, in registration order."""
    return [(k, v) for k, v in object_info.items() if v.get("python_module") == PACK_MODULE]


def render_node(node_id: str, info: dict, level: int = 3) -> str:
    """One node: heading, description, input and output tables."""
    out = [f"{'#' * level} {info['display_name']} (`{node_id}`)\n\n{info.get('description', '').strip()}\n",
           "| input | type | default | meaning |\n|---|---|---|---|"]
    inputs = info["input"]
    for section in ("required", "optional"):
        for name in info.get("input_order", {}).get(section, list(inputs.get(section, {}))):
            spec = inputs[section][name]
            shown = spec[1].get("display_name") if len(spec) > 1 else None
            label = (f"`{shown}` (id `{name}`)" if shown and shown != name else f"`{name}`") \
                + (" (optional)" if section == "optional" else "")
            if name.endswith("_name") and _type(spec).startswith("one of"):
                typ = "file name"  # a folder listing: differs per install
            else:
                typ = _type(spec)
            out.append(f"| {label} | {_cell(typ)} | {_cell(_default(spec))} | {_cell(spec[1].get('tooltip', ''))} |")
    out.append("\n| output | type | meaning |\n|---|---|---|")
    tips = info.get("output_tooltips") or [""] * len(info["output"])
    for name, typ, tip in zip(info["output_name"], info["output"], tips):
        out.append(f"| `{name}` | {_cell(typ)} | {_cell(tip or '')} |")
    notes = NOTES.get(node_id, {})
    names = [n for s in ("required", "optional") for n in inputs.get(s, {})] + list(info["output_name"])
    unknown = set(notes) - set(names)
    if unknown:
        raise SystemExit(f"tools/node_reference.py NOTES[{node_id!r}] names no input or output: {sorted(unknown)}")
    if notes:
        out.append("\nDetails:\n")
        shown = {n: s[1].get("display_name") for g in ("required", "optional") for n, s in inputs.get(g, {}).items()
                 if len(s) > 1 and s[1].get("display_name")}
        out += [f"- `{shown.get(n) or n}`: {notes[n]}" for n in dict.fromkeys(names) if n in notes]
    return "\n".join(out) + "\n"


def render(object_info: dict) -> str:
    """docs/nodes.md's block: every node of this pack, in registration order."""
    return "\n".join(render_node(k, v) for k, v in pack_nodes(object_info)).rstrip() + "\n"


def help_pages(object_info: dict) -> dict[str, str]:
    """web/docs/<NodeId>.md for every node of this pack: the same section, as a page of its own."""
    more = (f"\nMore: [documentation]({URLS['Documentation']}), "
            f"[troubleshooting]({URLS['Repository']}/blob/main/docs/troubleshooting.md).\n")
    return {k: render_node(k, v, level=1) + more for k, v in pack_nodes(object_info)}


def nodes_block(text: str | None = None) -> str:
    """The generated block as docs/nodes.md holds it now."""
    text = NODES_MD.read_text() if text is None else text
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def web_pages() -> dict[str, str]:
    """The help pages as web/docs holds them now, by node id."""
    return {f.stem: f.read_text() for f in sorted(WEB_DOCS.glob("*.md"))}


def readme_troubleshooting() -> list[str]:
    """README's troubleshooting rows, as docs/troubleshooting.md words them."""
    rows = [ln for ln in TROUBLESHOOTING_MD.read_text().splitlines() if ln.startswith("| ")]
    out = []
    for key in README_ROWS:
        found = [ln for ln in rows if key in ln.split(" | ", 1)[0]]
        if len(found) != 1:
            raise SystemExit(f"README_ROWS key {key!r} matches {len(found)} rows of {TROUBLESHOOTING_MD}")
        out.append(found[0])
    return out


def readme_rows(text: str | None = None) -> list[str]:
    """The rows of README's troubleshooting table now."""
    body = (README.read_text() if text is None else text).split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
    return [ln for ln in body.splitlines() if ln.startswith("| ") and not ln.startswith("| message starts with")]


def write_readme_troubleshooting() -> None:
    text = README.read_text()
    old = readme_rows(text)
    new = readme_troubleshooting()
    if old != new:
        block = "\n".join(old)
        assert text.count(block) == 1, "README's troubleshooting rows are not one block"
        README.write_text(text.replace(block, "\n".join(new)))
        print(f"updated {README}'s troubleshooting rows")


def write(object_info: dict) -> None:
    text = NODES_MD.read_text()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    NODES_MD.write_text(f"{head}{START}\n{render(object_info)}{END}{tail}")
    print(f"updated {NODES_MD}")
    pages = help_pages(object_info)
    WEB_DOCS.mkdir(parents=True, exist_ok=True)
    for stale in set(web_pages()) - set(pages):
        (WEB_DOCS / f"{stale}.md").unlink()
        print(f"removed {WEB_DOCS / stale}.md")
    for node_id, page in pages.items():
        (WEB_DOCS / f"{node_id}.md").write_text(page)
    print(f"wrote {len(pages)} help pages to {WEB_DOCS}")
    write_readme_troubleshooting()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", required=True, help="ComfyUI checkout (its main.py folder)")
    ap.add_argument("--python", help="python that runs that ComfyUI (default: a venv beside it, else this one)")
    ap.add_argument("--write", action="store_true", help="update docs/nodes.md and web/docs/ in place")
    a = ap.parse_args()
    import _repo  # noqa: F401  (run as a script: the repository root on sys.path, for stas_harness)
    from stas_harness.server import ComfyServer

    with ComfyServer(a.comfyui, a.python, test_nodes=False) as srv:
        info = srv.object_info()
        if not pack_nodes(info):  # the pack failed to import: never write an empty reference
            sys.exit(f"this pack's nodes are missing from /object_info; ComfyUI's log:\n{srv.log_tail()}")
    if a.write:
        write(info)
    else:
        print(render(info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
