"use strict";
// The dinolab explorer page: the numbers are embedded (explorer-meta, explorer-data); this
// script recomputes the clicked token's attention from the int8 factors, its cosine similarity
// to every patch, and draws them. No library, no network.
(function () {
  const META = JSON.parse(document.getElementById("explorer-meta").textContent);
  const BYTES = (function () {
    const text = atob(document.getElementById("explorer-data").textContent.trim());
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  })();
  const TYPES = { int8: Int8Array, uint8: Uint8Array, float32: Float32Array };

  function array(name) {
    const [offset, dtype, shape] = META.arrays[name];
    return new TYPES[dtype](BYTES.buffer, offset, shape.reduce((a, b) => a * b, 1));
  }

  // int8 rows times their scales, each row scaled to unit length: cosine = dot product
  function unitRows(values, scales, width) {
    const out = new Float32Array(values.length);
    for (let r = 0; r < scales.length; r++) {
      let norm = 0;
      for (let k = 0; k < width; k++) norm += (values[r * width + k] * scales[r]) ** 2;
      const inv = norm > 0 ? 1 / Math.sqrt(norm) : 0;
      for (let k = 0; k < width; k++) out[r * width + k] = values[r * width + k] * scales[r] * inv;
    }
    return out;
  }

  const D = META.dim, P = META.prefix, LUT = array("lut");
  const hasAttention = !META.noAttention;
  const IMAGES = META.images.map((im, i) => ({
    name: im.name, grid: im.grid, src: im.src, patches: im.grid[0] * im.grid[1],
    tokens: P + im.grid[0] * im.grid[1],
    features: unitRows(array(`feat_${i}`), array(`feat_scale_${i}`), D),
    pca: array(`pca_${i}`),
    factors: hasAttention ? {
      left: array(`left_${i}`), leftScale: array(`left_scale_${i}`),
      right: array(`right_${i}`), rightScale: array(`right_scale_${i}`),
    } : null,
  }));
  const CLS = unitRows(array("cls"), array("cls_scale"), D);
  const state = {
    image: 0, token: hasAttention ? 0 : P, block: Math.max(0, META.blocks - 1),
    registers: false, outline: true, hover: false, view: "similarity",
  };
  const explorer = { meta: META, state: state, lut: LUT, drawn: null, ready: false };
  window.explorer = explorer;

  // ---------------------------------------------------------------------------- numbers
  // Softmax over the tokens kept (patches, and registers when shown) of left[token] . right[j]:
  // a softmax renormalised over a subset is the softmax over that subset, as in eval.attention.
  function attention(imageIndex, token, block) {
    const im = IMAGES[imageIndex], f = im.factors, N = im.tokens, R = META.rank;
    const first = state.registers ? 1 : P;
    const heads = [], registers = [], share = [];
    for (let h = 0; h < META.heads; h++) {
      const row = (block * META.heads + h) * N;
      const q = (row + token) * R, qs = f.leftScale[row + token];
      const logits = new Float64Array(N);
      let top = -Infinity;
      for (let j = 0; j < N; j++) {
        const k = (row + j) * R;
        let dot = 0;
        for (let c = 0; c < R; c++) dot += f.left[q + c] * f.right[k + c];
        logits[j] = dot * qs * f.rightScale[row + j];
        if (logits[j] > top) top = logits[j];
      }
      let all = 0, kept = 0, onPatches = 0;
      for (let j = 0; j < N; j++) {
        logits[j] = Math.exp(logits[j] - top);
        all += logits[j];
        if (j >= first) kept += logits[j];
        if (j >= P) onPatches += logits[j];
      }
      const map = new Float64Array(im.patches);
      for (let j = 0; j < im.patches; j++) map[j] = logits[P + j] / kept;
      const regs = [];
      for (let j = first; j < P; j++) regs.push(logits[j] / kept);
      heads.push(map); registers.push(regs); share.push(onPatches / all);
    }
    const mean = new Float64Array(im.patches);
    for (const map of heads) for (let j = 0; j < map.length; j++) mean[j] += map[j] / heads.length;
    const meanRegisters = registers[0].map((_, r) =>
      registers.reduce((s, regs) => s + regs[r], 0) / registers.length);
    return { heads, registers, share, mean, meanRegisters };
  }

  // The largest weights whose sum first reaches the threshold (eval.attention.mass_mask)
  function massMask(values) {
    let total = 0;
    for (const v of values) total += v;
    const order = Array.from(values.keys()).sort((a, b) => values[b] - values[a]);
    const mask = new Uint8Array(values.length);
    let cumulative = 0;
    for (const i of order) {
      const share = values[i] / total;
      cumulative += share;
      mask[i] = cumulative - share < META.threshold ? 1 : 0;
    }
    return mask;
  }

  function queryVector(imageIndex, token) {
    if (token === 0) return CLS.subarray(imageIndex * D, (imageIndex + 1) * D);
    const p = token - P;
    return IMAGES[imageIndex].features.subarray(p * D, (p + 1) * D);
  }

  function similarity(imageIndex, token) {
    const q = queryVector(imageIndex, token);
    return IMAGES.map(im => {
      const out = new Float64Array(im.patches);
      for (let p = 0; p < im.patches; p++) {
        let dot = 0;
        for (let k = 0; k < D; k++) dot += q[k] * im.features[p * D + k];
        out[p] = dot;
      }
      return out;
    });
  }

  function argmax(values, skip) {
    let best = -1;
    for (let i = 0; i < values.length; i++)
      if (i !== skip && (best < 0 || values[i] > values[best])) best = i;
    return best;
  }

  // ---------------------------------------------------------------------------- drawing
  function range(lists) {
    let lo = Infinity, hi = -Infinity;
    for (const list of lists) for (const v of list) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    return [lo, hi];
  }

  function colour(v, lo, hi) {
    const i = hi > lo ? Math.round(255 * (v - lo) / (hi - lo)) : 0;
    return [LUT[3 * i], LUT[3 * i + 1], LUT[3 * i + 2]];
  }

  function outline(ctx, mask, grid, cell) {
    const [h, w] = grid;
    const on = (r, c) => r >= 0 && r < h && c >= 0 && c < w && mask[r * w + c] === 1;
    ctx.strokeStyle = "yellow";
    ctx.lineWidth = Math.max(1, cell / 8);
    ctx.beginPath();
    for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) {
      if (!on(r, c)) continue;
      const x = c * cell, y = r * cell;
      if (!on(r - 1, c)) { ctx.moveTo(x, y); ctx.lineTo(x + cell, y); }
      if (!on(r + 1, c)) { ctx.moveTo(x, y + cell); ctx.lineTo(x + cell, y + cell); }
      if (!on(r, c - 1)) { ctx.moveTo(x, y); ctx.lineTo(x, y + cell); }
      if (!on(r, c + 1)) { ctx.moveTo(x + cell, y); ctx.lineTo(x + cell, y + cell); }
    }
    ctx.stroke();
  }

  function markPatch(ctx, p, grid, cell, style) {
    const r = Math.floor(p / grid[1]), c = p % grid[1];
    ctx.strokeStyle = style;
    ctx.lineWidth = Math.max(2, cell / 6);
    ctx.strokeRect(c * cell + 1, r * cell + 1, cell - 2, cell - 2);
  }

  // A map on the patch grid, own colour range (as `dinolab attention` draws it); the registers'
  // weights, when shown, as one more row of cells on the same range.
  function drawMap(canvas, values, registers, grid, mask) {
    const [h, w] = grid;
    const cell = Math.max(4, Math.floor(128 / Math.max(h, w)));
    canvas.width = w * cell;
    canvas.height = (h + (registers.length ? 1 : 0)) * cell;
    canvas.dataset.cell = cell;
    const ctx = canvas.getContext("2d");
    const [lo, hi] = range([values, registers]);
    for (let p = 0; p < values.length; p++) {
      ctx.fillStyle = `rgb(${colour(values[p], lo, hi)})`;
      ctx.fillRect((p % w) * cell, Math.floor(p / w) * cell, cell, cell);
    }
    registers.forEach((v, r) => {
      ctx.fillStyle = `rgb(${colour(v, lo, hi)})`;
      ctx.fillRect(r * cell, h * cell, cell, cell);
    });
    if (state.outline) outline(ctx, mask, grid, cell);
    return { lo, hi, cell };
  }

  function drawImage(canvas, imageIndex) {
    const im = IMAGES[imageIndex];
    canvas.width = im.element.naturalWidth;
    canvas.height = im.element.naturalHeight;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(im.element, 0, 0);
    return ctx;
  }

  function label(imageIndex, token) {
    if (token === 0) return "[CLS]";
    if (token < P) return `register ${token - 1}`;
    const p = token - P, w = IMAGES[imageIndex].grid[1];
    return `patch (row ${Math.floor(p / w)}, col ${p % w})`;
  }

  const $ = id => document.getElementById(id);
  function element(tag, attrs, text) {
    const e = document.createElement(tag);
    Object.assign(e, attrs || {});
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function drawDetail(drawn) {
    const im = IMAGES[state.image], cell = META.patch;
    const main = $("main");
    const ctx = drawImage(main, state.image);
    if (drawn.attention) {
      ctx.fillStyle = "rgba(0, 0, 0, 0.7)";
      drawn.attention.meanMask.forEach((m, p) => {
        if (!m) ctx.fillRect((p % im.grid[1]) * cell, Math.floor(p / im.grid[1]) * cell, cell, cell);
      });
      if (state.outline) outline(ctx, drawn.attention.meanMask, im.grid, cell);
    }
    if (state.token >= P) markPatch(ctx, state.token - P, im.grid, cell, "#0cf");
    $("main-caption").textContent = drawn.attention
      ? `${im.name}: ${label(state.image, state.token)}, block ${state.block}; the mean map's ` +
        `mask keeps ${Math.round(100 * META.threshold)}% of the attention mass`
      : `${im.name}: ${label(state.image, state.token)}`;
    const maps = $("maps");
    maps.replaceChildren();
    if (drawn.attention) {
      const a = drawn.attention;
      const panels = [["mean over heads", a.mean, a.meanRegisters, a.meanMask]].concat(
        a.heads.map((m, h) => [`head ${h} (${Math.round(100 * a.share[h])}% on patches)`, m,
          a.registers[h], a.masks[h]]));
      panels.forEach(([title, values, registers, mask], k) => {
        const canvas = element("canvas", { id: k === 0 ? "map-mean" : `map-head-${k - 1}` });
        const range = drawMap(canvas, values, registers, im.grid, mask);
        canvas.dataset.lo = range.lo;
        canvas.dataset.hi = range.hi;
        canvas.addEventListener("click", e => clickMap(e, canvas));
        const fig = element("figure");
        fig.append(canvas, element("figcaption", {}, title));
        maps.append(fig);
      });
    } else {
      maps.append(element("p", { className: "note", id: "no-attention" },
        `No attention view: ${META.noAttention}.`));
    }
    const list = $("nearest");
    list.replaceChildren();
    drawn.nearest.forEach(([j, cos]) => {
      const item = element("li", {}, `${IMAGES[j].name} (${cos.toFixed(3)})`);
      item.addEventListener("click", () => select(j, state.token < P ? 0 : state.token));
      list.append(item);
    });
  }

  function drawGrid(drawn) {
    const [lo, hi] = range(drawn.similarity);
    IMAGES.forEach((im, i) => {
      const canvas = $(`grid-${i}`), cell = META.patch;
      const ctx = drawImage(canvas, i);
      if (state.view !== "image") {
        ctx.globalAlpha = state.view === "pca" ? 1.0 : 0.75;
        for (let p = 0; p < im.patches; p++) {
          ctx.fillStyle = state.view === "pca"
            ? `rgb(${im.pca[3 * p]},${im.pca[3 * p + 1]},${im.pca[3 * p + 2]})`
            : `rgb(${colour(drawn.similarity[i][p], lo, hi)})`;
          ctx.fillRect((p % im.grid[1]) * cell, Math.floor(p / im.grid[1]) * cell, cell, cell);
        }
        ctx.globalAlpha = 1.0;
      }
      if (state.view === "similarity" && drawn.best[i] >= 0) markPatch(ctx, drawn.best[i], im.grid, cell, "#0f0");
      if (i === state.image && state.token >= P) markPatch(ctx, state.token - P, im.grid, cell, "#0cf");
      canvas.parentElement.classList.toggle("current", i === state.image);
      const cos = META.clsSimilarity[state.image][i];
      $(`grid-caption-${i}`).textContent = state.view === "similarity"
        ? `${im.name}: best ${drawn.bestValue[i].toFixed(2)}, [CLS] ${cos.toFixed(2)}`
        : `${im.name}: [CLS] ${cos.toFixed(2)}`;
    });
    $("grid-note").textContent = state.view === "similarity"
      ? `Cosine similarity of the ${label(state.image, state.token)} of ${IMAGES[state.image].name} ` +
        `to every patch (colours from ${lo.toFixed(2)} to ${hi.toFixed(2)}); green: each image's best match.`
      : state.view === "pca" ? "PCA of the patch features, colours joint over the images." : "";
  }

  function redraw() {
    $("block").disabled = !hasAttention;
    $("block-label").textContent = hasAttention
      ? `block ${state.block} of ${META.blocks} (attention from ${META.rank} of ${META.headWidth} factor columns per head)`
      : "no blocks";
    const drawn = { image: state.image, token: state.token, block: state.block, attention: null };
    if (hasAttention) {
      const a = attention(state.image, state.token, state.block);
      a.masks = a.heads.map((m, h) => massMask(Array.from(m).concat(a.registers[h])).slice(0, m.length));
      a.meanMask = massMask(Array.from(a.mean).concat(a.meanRegisters)).slice(0, a.mean.length);
      drawn.attention = a;
    }
    // register queries have no feature: the similarity is that of the image's [CLS]
    const simToken = state.token >= P ? state.token : 0;
    drawn.similarity = similarity(state.image, simToken);
    drawn.best = drawn.similarity.map((s, i) => argmax(s, i === state.image && simToken >= P ? simToken - P : -1));
    drawn.bestValue = drawn.best.map((b, i) => b >= 0 ? drawn.similarity[i][b] : NaN);
    drawn.nearest = META.clsSimilarity[state.image].map((c, j) => [j, c])
      .filter(([j]) => j !== state.image).sort((a, b) => b[1] - a[1]).slice(0, 5);
    explorer.drawn = drawn;
    drawDetail(drawn);
    drawGrid(drawn);
  }

  function select(imageIndex, token) {
    state.image = imageIndex;
    state.token = token;
    redraw();
  }
  explorer.select = select;

  function cellAt(e, canvas, cell) {
    const rect = canvas.getBoundingClientRect();
    const x = (e.clientX - rect.left) * canvas.width / rect.width;
    const y = (e.clientY - rect.top) * canvas.height / rect.height;
    return [Math.floor(y / cell), Math.floor(x / cell)];
  }

  function clickImage(e, imageIndex, canvas) {
    const [r, c] = cellAt(e, canvas, META.patch), [h, w] = IMAGES[imageIndex].grid;
    const token = P + Math.min(r, h - 1) * w + Math.min(c, w - 1);
    if (imageIndex !== state.image || token !== state.token) select(imageIndex, token);
  }

  function onImage(canvas, imageIndex) {
    canvas.addEventListener("click", e => clickImage(e, imageIndex(), canvas));
    canvas.addEventListener("mousemove", e => { if (state.hover) clickImage(e, imageIndex(), canvas); });
  }

  function clickMap(e, canvas) {
    const [r, c] = cellAt(e, canvas, +canvas.dataset.cell), [h, w] = IMAGES[state.image].grid;
    if (r >= h) {
      if (c < META.registers) select(state.image, 1 + c);
    } else {
      select(state.image, P + r * w + Math.min(c, w - 1));
    }
  }

  function build() {
    document.body.append(element("h1", {}, META.title));
    const controls = element("div", { id: "controls" });
    controls.innerHTML =
      '<label>block <input type="range" id="block"></label><span id="block-label"></span>' +
      '<button id="cls-query">[CLS] query</button>' +
      '<label>grid <select id="view"><option value="similarity">similarity</option>' +
      '<option value="pca">PCA colours</option><option value="image">image</option></select></label>' +
      '<label><input type="checkbox" id="hover"> follow the mouse</label>' +
      '<label><input type="checkbox" id="outline" checked> mask outline</label>' +
      '<label><input type="checkbox" id="registers"> registers (storage tokens)</label>';
    document.body.append(controls);
    const detail = element("div", { id: "detail" });
    detail.innerHTML =
      '<figure><canvas id="main"></canvas><figcaption id="main-caption"></figcaption></figure>' +
      '<div id="maps"></div><div id="side"><b>Nearest images by [CLS]</b><ol id="nearest"></ol>' +
      "<p>Click a patch of any image or map; a map's bottom row holds the registers when shown.</p></div>";
    document.body.append(detail, element("p", { id: "grid-note" }));
    const grid = element("div", { id: "grid" });
    IMAGES.forEach((im, i) => {
      const fig = element("figure");
      const canvas = element("canvas", { id: `grid-${i}` });
      onImage(canvas, () => i);
      fig.append(canvas, element("figcaption", { id: `grid-caption-${i}` }));
      grid.append(fig);
    });
    document.body.append(grid);
    onImage($("main"), () => state.image);
    $("hover").addEventListener("change", e => { state.hover = e.target.checked; });
    const block = $("block");
    Object.assign(block, { min: 0, max: Math.max(0, META.blocks - 1), value: state.block });
    block.addEventListener("input", () => { state.block = +block.value; redraw(); });
    $("cls-query").disabled = !hasAttention;
    $("cls-query").addEventListener("click", () => select(state.image, 0));
    $("view").addEventListener("change", e => { state.view = e.target.value; redraw(); });
    $("outline").addEventListener("change", e => { state.outline = e.target.checked; redraw(); });
    const registers = $("registers");
    registers.disabled = !hasAttention || META.registers === 0;
    registers.parentElement.title = META.registers ? `${META.registers} register tokens` : "this model has no registers";
    registers.addEventListener("change", e => {
      state.registers = e.target.checked;
      if (!state.registers && state.token > 0 && state.token < P) state.token = 0;
      redraw();
    });
  }

  Promise.all(IMAGES.map(im => {
    im.element = new Image();
    im.element.src = im.src;
    return im.element.decode();
  })).then(() => {
    build();
    redraw();
    explorer.ready = true;
  });
})();
