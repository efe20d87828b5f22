// comfyui-stas: every node of the pack opens wide enough to show its whole title, also where the
// frontend puts the node-source badge ("comfyui-stas") beside the title (the Vue node renderer of
// frontend 1.35 cut "MA Recorder (STAS)" to "MA Recorder (S..." at the default width).
import { app } from "../../scripts/app.js";

const HEADER_EXTRA = 150; // collapse toggle, source badge and paddings beside the title, px at zoom 1
let ctx = null;

function titleWidth(title) {
  ctx ??= document.createElement("canvas").getContext("2d");
  ctx.font = "600 14px sans-serif";
  return ctx.measureText(title).width;
}

app.registerExtension({
  name: "comfyui-stas.NodeWidth",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("STAS") || !nodeData.python_module?.startsWith("custom_nodes.")) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = created?.apply(this, arguments);
      const want = Math.ceil(titleWidth(this.title || nodeData.display_name || "") + HEADER_EXTRA);
      if (this.size && this.size[0] < want) this.setSize?.([want, this.size[1]]);
      return r;
    };
  },
});
