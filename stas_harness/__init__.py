"""The harness shared by tests/, bench/, tools/ and scripts/: ComfyUI in process or as a server,
random-weight models from ComfyUI's own classes, this pack's nodes called at their declared
defaults. Not part of the node pack (ComfyUI never imports it).

    stas_harness.comfy_env        ComfyUI in this process: import_comfyui(), load_pack() / require_comfy(),
                                  pack_module(), Pack, run_node() / stas() / boundary_mask() (node
                                  defaults read from the node's schema), latent(), text_cond(), sample(),
                                  run_prompt()
    stas_harness.models           random-weight Wan, HunyuanVideo, CogVideoX, ... (tiny_*; wan() and
                                  hunyuan_video() at the bench's real sizes) through ComfyUI's loader
    stas_harness.server           ComfyServer: a real ComfyUI server with this pack (stdlib only);
                                  FrontendPage: its frontend in headless Chromium; shrink_prompt()
    stas_harness.visualizer_page  the MA Visualizer's page (tests/test_web_visualizer.py,
                                  tools/make_screenshots.py)
    stas_harness.fixtures         pytest fixtures pk, comfy_server, browser, frontend_page
                                  (registered by tests/conftest.py)
    stas_harness.ranks            torch.distributed ranks in processes (run_ranks), raylight's pad-and-chunk
                                  (pad_chunk, gather), a stand-in for xfuser's sequence-parallel group
    stas_harness.raylight         raylight's own USP forwards from its source, exact attention instead of xfuser's
    stas_harness.usp              sequence-parallel Wan through ComfyUI's public hooks (bench/bench_usp.py)

Imports: pytest puts the repository root on sys.path (pyproject.toml: pythonpath = ["."]), so
tests import ``stas_harness``, ``stas_core`` and ``tools.<name>`` directly. A script run as
``python3 bench/x.py`` (or tools/, scripts/) starts with ``from _repo import ROOT``: its folder's
_repo.py (the same few lines in each of the three folders) puts the repository root on sys.path.
Besides those, only import_comfyui() adds to sys.path (the ComfyUI checkout).
"""
