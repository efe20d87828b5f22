"""STAS Model Patch (Ray) without raylight, in the real ComfyUI frontend (issue 31 item 6).

The testbeds have no `ray` (raylight needs CUDA: docs/multigpu.md), as a user without raylight. In a
browser on a real ComfyUI server (stas_harness/server.py), the node is added to an empty graph and the
graph is queued as the Run button does (app.queuePrompt): ComfyUI refuses it at queue time, and what the
page shows and the /prompt answer say start with the node's name and "raylight is not installed" (not the
frontend's "Missing connection" / ComfyUI's "Required input is missing", which a required ray_actors gave).
Bypassing the node leaves it out of the queued graph, as for any node.

Runs on the testbed's own frontend and, on the newest testbed, also on frontend 1.58.
"""
from __future__ import annotations

import subprocess

import pytest

from stas_harness import server as harness
from stas_harness.fixtures import serve_on_frontend
from stas_harness.server import ComfyServer, FrontendPage

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow]

MESSAGE = "STAS Model Patch (Ray): raylight is not installed"


@pytest.fixture(scope="module", params=harness.frontend_params())
def server(request):
    yield from serve_on_frontend(ComfyServer, request.param)


def test_queueing_the_ray_node_without_raylight_says_so(server, browser):
    if subprocess.run([server.python, "-c", "import ray"], capture_output=True).returncode == 0:
        pytest.skip("ray is installed in this ComfyUI's python: the node has workers to look for")
    ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
    try:
        fp = FrontendPage(ctx.new_page(), server).open()
        node_id = fp.evaluate("""() => {
            app.graph.clear();
            const n = LiteGraph.createNode('STASModelPatchRay');
            n.pos = [200, 200];
            app.graph.add(n);
            app.canvas.setDirty(true, true);
            return n.id;
        }""")
        bypassed = fp.evaluate("""async (id) => {
            const n = app.graph.getNodeById(id);
            n.mode = 4;
            const p = await app.graphToPrompt();
            n.mode = 0;
            return Object.keys(p.output);
        }""", node_id)
        assert bypassed == [], f"a bypassed node is still queued: {bypassed}"

        with fp.page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST") as got:
            fp.evaluate("() => { app.queuePrompt(0); }")  # what the Run button calls
        resp = got.value
        sent = resp.request.post_data_json["prompt"]
        assert list(sent) == [str(node_id)] and sent[str(node_id)]["class_type"] == "STASModelPatchRay", sent
        body = resp.json()
        assert resp.status == 400, body
        errors = body["node_errors"][str(node_id)]["errors"]
        assert len(errors) == 1 and errors[0]["details"].startswith(MESSAGE), errors
        assert "Install raylight (ComfyUI Manager: 'Raylight')" in errors[0]["details"]
        assert all(e["type"] != "required_input_missing" for e in errors), errors

        shown = fp.page.get_by_text(MESSAGE).first  # the frontend's error dialog (1.27) or toast (1.49, 1.58)
        shown.wait_for(state="visible", timeout=30_000)
        text = fp.evaluate("() => document.body.innerText")
        assert "Missing connection" not in text and "Required input is missing" not in text, text[-2000:]
        assert fp.page_errors == [] or all("Prompt execution failed" in e for e in fp.page_errors), fp.page_errors
    finally:
        ctx.close()
