// comfyui-stas: the Boundary Mask Builder's head / tail widths follow its unit.
//
// One FLOAT widget serves three units: whole token rows, whole tokens, or a fraction (0..1) of the
// frame. The frontend derives a number widget's rounding and displayed precision from its step, so
// with one fixed step either 0.25 shows (and is stored) as 0, or the arrows crawl through rows in
// hundredths. This sets step, precision and rounding from the unit whenever it changes (and when a
// workflow is loaded); the values themselves are never changed here.
import { app } from "../../scripts/app.js";

const NODE_ID = "STASBoundaryMaskBuilder";
const WIDTHS = ["head", "tail"];
const BY_UNIT = { rows: { step: 1, precision: 0 }, tokens: { step: 1, precision: 0 }, fraction: { step: 0.05, precision: 2 } };

function fitWidths(node) {
  const unit = node.widgets?.find((w) => w.name === "unit")?.value;
  const { step, precision } = BY_UNIT[unit] ?? BY_UNIT.rows;
  for (const w of node.widgets ?? []) {
    if (!WIDTHS.includes(w.name) || !w.options) continue;
    w.options.step2 = step;
    w.options.step = step * 10; // LiteGraph's legacy 10x step
    w.options.precision = precision;
    w.options.round = Math.pow(10, -precision);
  }
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "comfyui-stas.BoundaryMaskBuilder",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_ID) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = created?.apply(this, arguments);
      const unit = this.widgets?.find((w) => w.name === "unit");
      if (unit) {
        const cb = unit.callback;
        const node = this;
        unit.callback = function () {
          const out = cb?.apply(this, arguments);
          fitWidths(node);
          return out;
        };
      }
      fitWidths(this);
      return r;
    };
    const configure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const r = configure?.apply(this, arguments);
      fitWidths(this);
      return r;
    };
  },
});
