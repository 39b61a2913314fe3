// Grounding boxes in GLM-V answers: [x1, y1, x2, y2] in thousandths of the image's width and height.
// Pure functions (no page state), so tests can call them directly through window.glmvBoxes.
(function () {
  const NUM = "\\s*(-?(?:\\d+(?:\\.\\d*)?|\\.\\d+))\\s*";
  // Same rule as glmv.engine.outputs.parse_boxes: any of [..] (..) <..> around four numbers.
  const BOX = new RegExp("[\\[(<]" + [NUM, NUM, NUM, NUM].join(",") + "[\\])>]", "g");
  const COLORS = ["#ff2d2d", "#22c55e", "#3b82f6", "#f59e0b", "#a855f7", "#06b6d4"];

  function parseBoxes(text) {
    const boxes = [];
    for (const m of text.matchAll(BOX)) boxes.push(m.slice(1, 5).map(Number));
    return boxes;
  }

  // Thousandths -> pixels of a width x height image, clamped and ordered (x1 <= x2, y1 <= y2).
  function toPixels(box, width, height) {
    const clamp = (v, hi) => Math.min(Math.max(v, 0), hi);
    const [x1, x2] = [box[0], box[2]].map((v) => clamp((v / 1000) * width, width)).sort((a, b) => a - b);
    const [y1, y2] = [box[1], box[3]].map((v) => clamp((v / 1000) * height, height)).sort((a, b) => a - b);
    return [x1, y1, x2, y2];
  }

  // Draw the boxes on a transparent canvas sized like the image (CSS lays it over the <img>).
  function drawBoxes(canvas, width, height, boxes) {
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, width, height);
    const line = Math.max(2, Math.round(Math.min(width, height) / 100));
    boxes.forEach((box, i) => {
      const [x1, y1, x2, y2] = toPixels(box, width, height);
      ctx.strokeStyle = COLORS[i % COLORS.length];
      ctx.lineWidth = line;
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      ctx.fillStyle = ctx.strokeStyle;
      ctx.font = `${Math.max(12, line * 6)}px sans-serif`;
      ctx.fillText(String(i + 1), x1 + line + 2, y1 + line * 6 + 4);
    });
    canvas.dataset.boxes = String(boxes.length);
    return boxes.length;
  }

  window.glmvBoxes = { parseBoxes, toPixels, drawBoxes };
})();
