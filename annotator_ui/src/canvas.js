// The task's picture: the image (optionally dimmed or with its contrast changed), each mask's
// overlay (fill and outline layers, see overlay.js), an optional paint layer and an optional focused
// mask cell (a point question), drawn with drawImage under one zoom/pan transform. Redraws never touch
// pixels in JS, so a 1024x1024 mask pans at frame rate.

/** An ImageBitmap of ``mask`` ({width, height, data}) in the palette; classes past it are clear. */
export async function maskBitmap(mask, palette) {
  const lut = new Uint32Array(256);  // RGBA as little-endian uint32; 0 = transparent
  palette.forEach(([r, g, b], i) => { lut[i] = (255 << 24 | b << 16 | g << 8 | r) >>> 0; });
  const image = new ImageData(mask.width, mask.height);
  const out = new Uint32Array(image.data.buffer);
  const { data } = mask;
  for (let i = 0; i < data.length; i++) out[i] = lut[data[i]];
  return createImageBitmap(image);
}

/**
 * Where a mask lies on the image, in image pixels: {x, y, w, h, lattice}.
 * A full-resolution or pooled mask covers the image (lattice null). A PSR lattice mask (grid mode)
 * holds the label's pixel every `stride` from `offset`: the pixels the learner acted on. Each is drawn
 * as the stride-sized cell centred on it (the odd pixel of an even stride to its right and below), and
 * the Viewer stretches the outer cells to the image's edges, so every image pixel shows the class of its
 * nearest lattice pixel. ``lattice``: where lattice pixel (0, 0) is ({x, y}), the step to the next (dx,
 * dy) and its size (w, h), all in image pixels (the label may be the image resized to the run's
 * image_size).
 */
export function maskRect(grid, maskWidth, maskHeight, imageWidth, imageHeight, imageSize) {
  if (!grid || !grid.scale || grid.mode !== 'grid') {
    return { x: 0, y: 0, w: imageWidth, h: imageHeight, lattice: null };
  }
  const labelW = imageSize || imageWidth, labelH = imageSize || imageHeight;
  const sy = Math.max(1, Math.floor(labelH / grid.scale)), sx = Math.max(1, Math.floor(labelW / grid.scale));
  const fx = imageWidth / labelW, fy = imageHeight / labelH;
  const [oy, ox] = grid.offset;
  const lattice = { x: ox * fx, y: oy * fy, dx: sx * fx, dy: sy * fy, w: fx, h: fy };
  return {
    x: (ox - Math.floor(sx / 2)) * fx, y: (oy - Math.floor(sy / 2)) * fy,
    w: maskWidth * sx * fx, h: maskHeight * sy * fy, lattice,
  };
}

/**
 * Draw ``source`` (a mask-sized layer) at ``rect``, its outer rows and columns stretched to the
 * image's edges (0..width, 0..height) where the rect falls short of them, and nothing past them.
 */
function drawCovering(ctx, source, rect, width, height) {
  const sw = source.width, sh = source.height;
  const spans = (start, size, srcSize, end) => {  // [src from, src size, dest from, dest size]
    const out = [];
    const stop = start + size;
    if (start > 0) out.push([0, 1, 0, start]);
    out.push([0, srcSize, start, size]);
    if (stop < end) out.push([srcSize - 1, 1, stop, end - stop]);
    return out;
  };
  ctx.save();
  ctx.beginPath();
  ctx.rect(0, 0, width, height);
  ctx.clip();
  for (const [sx, sW, dx, dW] of spans(rect.x, rect.w, sw, width)) {
    for (const [sy, sH, dy, dH] of spans(rect.y, rect.h, sh, height)) ctx.drawImage(source, sx, sy, sW, sH, dx, dy, dW, dH);
  }
  ctx.restore();
}

const GAP = 8;  // css px between side-by-side panes
const FOCUS_GAP = 3;  // css px between a focused cell's edge and the ring drawn around it
const FOCUS_MIN = 8;  // css px: the ring's half-size at least, so a cell smaller than a pixel is still found
const FOCUS_COLOUR = 'rgb(0, 229, 255)';  // the ring (with a black edge): cyan, rare in photos and palettes
const FOCUS_TICK = [6, 14];  // css px: the ticks pointing at the ring start this far outside it, and are this long
export const FOCUS_MARGIN = 8;  // css px a scene with a focus keeps around the fitted image: a ring at its edge shows whole

export class Viewer {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.scene = null;
    this.layout = 'single';  // 'single' | 'side' (every overlay in its own pane, tiled)
    this.shown = 0;  // which overlay 'single' shows
    this.opacity = 0.5;
    this.hidden = false;
    this.style = 'fill';  // 'fill' | 'outline' | 'both' (overlay.js STYLES)
    this.filter = 'none';  // the image's CSS filter (dim, contrast); 'none' leaves it as it is
    this.view = { scale: 1, x: 0, y: 0 };  // image px -> pane css px
    this.fitted = true;  // the view is the fitted one (a resize fits it again); a zoom or pan keeps it
    this.tool = null;  // {down(mx, my), move(mx, my), up(), radius} for painting, in mask pixels
    this.pointer = null;
    this.frame = 0;
    this.resize();
    new ResizeObserver(() => this.onResize()).observe(canvas);
    canvas.addEventListener('wheel', (e) => this.onWheel(e), { passive: false });
    canvas.addEventListener('pointerdown', (e) => this.onDown(e));
    canvas.addEventListener('pointermove', (e) => this.onMove(e));
    canvas.addEventListener('pointerup', (e) => this.onUp(e));
    canvas.addEventListener('pointercancel', (e) => this.onUp(e));
    canvas.addEventListener('pointerleave', () => { this.pointer = null; this.schedule(); });
    canvas.addEventListener('contextmenu', (e) => e.preventDefault());
  }

  resize() {
    const dpr = window.devicePixelRatio || 1;
    const { width, height } = this.canvas.getBoundingClientRect();
    this.cssW = Math.max(1, width);
    this.cssH = Math.max(1, height);
    this.canvas.width = Math.round(this.cssW * dpr);
    this.canvas.height = Math.round(this.cssH * dpr);
    this.dpr = dpr;
  }

  /**
   * The canvas changed size (the window, the layout): a fitted view is fitted again; a zoomed or
   * panned one keeps its zoom, and the image point at the pane's centre stays at its centre.
   */
  onResize() {
    const before = this.scene && !this.fitted ? this.panes()[0] : null;
    this.resize();
    if (before) {
      const { scale, x, y } = this.view;
      const after = this.panes()[0];
      this.view = { scale, x: x + (after.w - before.w) / 2, y: y + (after.h - before.h) / 2 };
    } else {
      this.fit();
    }
    this.draw();
  }

  /**
   * scene: {image (ImageBitmap), overlays: [MaskLayers (overlay.js) or a plain ImageBitmap], rect (maskRect), paint (canvas) | null, labels: ['A', 'B'] | null,
   * focus: {x, y} | null (a mask cell to ring, see setFocus), margin: css px kept clear around the fitted image (0)}
   */
  setScene(scene, layout = 'single') {
    this.scene = scene;
    this.layout = layout;
    this.shown = 0;
    this.fit();
    this.draw();
  }

  clear() {
    this.scene = null;
    this.tool = null;
    this.draw();
  }

  /**
   * The panes, in css px. 'side' tiles one pane per overlay in the grid of columns and rows that
   * shows the image largest (two masks on a wide canvas: side by side); all panes share one view.
   */
  panes() {
    const n = this.scene ? this.scene.overlays.length : 0;
    if (this.layout !== 'side' || n < 2) {
      return [{ index: 0, x: 0, y: 0, w: this.cssW, h: this.cssH, overlay: this.shown }];
    }
    const { width, height } = this.scene.image;
    let best = null;
    for (let cols = 1; cols <= n; cols++) {
      const rows = Math.ceil(n / cols);
      const w = (this.cssW - GAP * (cols - 1)) / cols, h = (this.cssH - GAP * (rows - 1)) / rows;
      const fit = Math.min(w / width, h / height);
      if (!best || fit >= best.fit) best = { cols, w, h, fit };  // a tie: more columns
    }
    const { cols, w, h } = best;
    return Array.from({ length: n }, (_, i) => (
      { index: i, x: (i % cols) * (w + GAP), y: Math.floor(i / cols) * (h + GAP), w, h, overlay: i }));
  }

  fit() {
    if (!this.scene) return;
    const { width, height } = this.scene.image;
    const pane = this.panes()[0];
    const margin = this.scene.margin || 0;
    const scale = Math.max(1e-3, Math.min((pane.w - 2 * margin) / width, (pane.h - 2 * margin) / height));
    this.view = { scale, x: (pane.w - width * scale) / 2, y: (pane.h - height * scale) / 2 };
    this.fitted = true;
  }

  setLayout(layout) { this.layout = layout; this.fit(); this.draw(); }
  setOpacity(opacity) { this.opacity = Math.min(1, Math.max(0, opacity)); this.schedule(); }
  setHidden(hidden) { this.hidden = hidden; this.schedule(); }
  setStyle(style) { this.style = style; this.schedule(); }
  /** The image's brightness, contrast and colour (saturation); 1 leaves each as it is. */
  setImage(brightness, contrast, colour = 1) {
    this.filter = brightness === 1 && contrast === 1 && colour === 1 ? 'none'
      : `brightness(${brightness}) contrast(${contrast}) saturate(${colour})`;
    this.schedule();
  }
  flip() { this.shown = (this.shown + 1) % (this.scene ? this.scene.overlays.length : 1); this.schedule(); }

  /**
   * Ring mask cell ``cell`` ({x, y}, the mask's own pixel coordinates), or nothing (null): drawn
   * around the image pixels the cell covers (fromMask: the overlay's own mapping, lattice or not),
   * over the overlay and also while it is hidden. A cell outside the pane is panned to its centre.
   */
  setFocus(cell) {
    if (!this.scene) return;
    this.scene.focus = cell;
    if (cell) {
      const c = this.cellRect(cell.x, cell.y);
      const { scale, x, y } = this.view;
      const pane = this.panes()[0];
      const [cx, cy] = [x + (c.x + c.w / 2) * scale, y + (c.y + c.h / 2) * scale];
      if (cx < 0 || cy < 0 || cx > pane.w || cy > pane.h) {
        this.view = { scale, x: pane.w / 2 - (c.x + c.w / 2) * scale, y: pane.h / 2 - (c.y + c.h / 2) * scale };
        this.fitted = false;
      }
    }
    this.schedule();
  }

  /** Redraw on the next animation frame (pointer moves and zooms coalesce into one draw). */
  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }

  draw() {
    const { ctx, dpr } = this;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.scene) return;
    const { image, overlays, rect, paint, labels } = this.scene;
    const { scale, x, y } = this.view;
    // what the tests read back (image px -> css px of the first pane); nothing else is exposed
    Object.assign(this.canvas.dataset, { scale: String(scale), x: String(x), y: String(y) });
    for (const pane of this.panes()) {
      ctx.save();
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.beginPath();
      ctx.rect(pane.x, pane.y, pane.w, pane.h);
      ctx.clip();
      ctx.setTransform(dpr * scale, 0, 0, dpr * scale, dpr * (pane.x + x), dpr * (pane.y + y));
      ctx.imageSmoothingEnabled = false;  // class boundaries stay crisp when zoomed
      ctx.filter = this.filter;
      ctx.drawImage(image, 0, 0);
      ctx.filter = 'none';
      if (!this.hidden) this.drawOverlay(ctx, overlays[pane.overlay], rect, paint);
      ctx.globalAlpha = 1;
      if (this.tool && this.pointer && this.pointer.pane.index === pane.index) this.drawBrush(ctx);
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      if (this.scene.focus) this.drawFocus(ctx, pane);
      if (labels) {
        ctx.font = 'bold 20px system-ui, sans-serif';
        ctx.fillStyle = 'rgba(0,0,0,0.6)';
        ctx.fillRect(pane.x + 6, pane.y + 6, 30, 28);
        ctx.fillStyle = '#fff';
        ctx.fillText(labels[pane.overlay], pane.x + 13, pane.y + 27);
      }
      ctx.restore();
    }
  }

  /** A mask's fill and/or outline (by style; a plain bitmap is a fill), then the paint layer over it. */
  drawOverlay(ctx, overlay, rect, paint) {
    const { width, height } = this.scene.image;
    const fill = overlay.fill || overlay, outline = overlay.outline;
    if (this.style !== 'outline' || !outline) {
      ctx.globalAlpha = this.opacity;
      drawCovering(ctx, fill, rect, width, height);
    }
    if (outline && this.style !== 'fill') {
      ctx.globalAlpha = Math.min(1, 2 * this.opacity);  // a thin line needs more opacity than a fill to be seen
      drawCovering(ctx, outline, rect, width, height);
    }
    if (paint) {
      ctx.globalAlpha = 0.75;
      drawCovering(ctx, paint, rect, width, height);
    }
  }

  drawBrush(ctx) {
    const { rect } = this.scene;
    const [mw, mh] = this.maskSize();
    const { ix, iy } = this.pointer;
    ctx.beginPath();
    ctx.ellipse(ix, iy, (this.tool.radius + 0.5) * rect.w / mw, (this.tool.radius + 0.5) * rect.h / mh, 0, 0, 2 * Math.PI);
    ctx.lineWidth = 1.5 / this.view.scale;
    ctx.strokeStyle = '#fff';
    ctx.stroke();
  }

  /**
   * A square ring (css px, fixed width at any zoom) around the image pixels of the focused cell,
   * and four white ticks pointing at it from outside, so a small cell is found at a glance.
   */
  drawFocus(ctx, pane) {
    const { scale, x, y } = this.view;
    const c = this.cellRect(this.scene.focus.x, this.scene.focus.y);
    const cx = pane.x + x + (c.x + c.w / 2) * scale, cy = pane.y + y + (c.y + c.h / 2) * scale;
    const hw = Math.max(FOCUS_MIN, c.w * scale / 2 + FOCUS_GAP + 1.5), hh = Math.max(FOCUS_MIN, c.h * scale / 2 + FOCUS_GAP + 1.5);
    const ring = new Path2D();
    ring.rect(cx - hw, cy - hh, 2 * hw, 2 * hh);
    const ticks = new Path2D();
    for (const [dx, dy] of [[1, 0], [-1, 0], [0, 1], [0, -1]]) {
      const [ax, ay] = [cx + dx * (hw + FOCUS_TICK[0]), cy + dy * (hh + FOCUS_TICK[0])];
      ticks.moveTo(ax, ay);
      ticks.lineTo(ax + dx * FOCUS_TICK[1], ay + dy * FOCUS_TICK[1]);
    }
    ctx.strokeStyle = '#000';
    ctx.lineWidth = 5;
    ctx.stroke(ring);
    ctx.stroke(ticks);
    ctx.lineWidth = 3;
    ctx.strokeStyle = FOCUS_COLOUR;
    ctx.stroke(ring);
    ctx.strokeStyle = '#fff';
    ctx.stroke(ticks);
  }

  maskSize() {
    const o = this.scene.overlays[0];
    return [o.width, o.height];
  }

  /** Client (css) coordinates -> {pane, ix, iy} in image pixels, or null outside every pane. */
  locate(clientX, clientY) {
    const box = this.canvas.getBoundingClientRect();
    const cx = clientX - box.left, cy = clientY - box.top;
    const pane = this.panes().find((p) => cx >= p.x && cx < p.x + p.w && cy >= p.y && cy < p.y + p.h);
    if (!pane) return null;
    const { scale, x, y } = this.view;
    return { pane, cx, cy, ix: (cx - pane.x - x) / scale, iy: (cy - pane.y - y) / scale };
  }

  /** Image pixels -> mask pixels (continuous): the mask's own grid, whatever the zoom or lattice. On a
   * lattice mask the image's edge strips belong to the outer cells (drawCovering stretches them there). */
  toMask(ix, iy) {
    const { rect, image } = this.scene;
    const [mw, mh] = this.maskSize();
    const m = [(ix - rect.x) / rect.w * mw, (iy - rect.y) / rect.h * mh];
    if (rect.lattice && ix >= 0 && iy >= 0 && ix < image.width && iy < image.height) {
      return [Math.min(mw - 1e-3, Math.max(0, m[0])), Math.min(mh - 1e-3, Math.max(0, m[1]))];
    }
    return m;
  }

  /** Mask pixels (continuous) -> image pixels: toMask's inverse, the overlay's own placement. */
  fromMask(mx, my) {
    const { rect } = this.scene;
    const [mw, mh] = this.maskSize();
    return [rect.x + mx / mw * rect.w, rect.y + my / mh * rect.h];
  }

  /** The image pixels {x, y, w, h} mask cell (mx, my) stands for: on a lattice mask the one pixel the
   * learner acted on (at the centre of the cell drawn), otherwise the pixels the cell is drawn over. */
  cellRect(mx, my) {
    const { lattice } = this.scene.rect;
    if (lattice) return { x: lattice.x + mx * lattice.dx, y: lattice.y + my * lattice.dy, w: lattice.w, h: lattice.h };
    const [x0, y0] = this.fromMask(mx, my), [x1, y1] = this.fromMask(mx + 1, my + 1);
    return { x: x0, y: y0, w: x1 - x0, h: y1 - y0 };
  }

  onWheel(event) {
    if (!this.scene) return;
    event.preventDefault();
    const at = this.locate(event.clientX, event.clientY);
    if (!at) return;
    const factor = Math.exp(-event.deltaY * 0.0015);
    const scale = Math.min(64, Math.max(0.05, this.view.scale * factor));
    // keep the image point under the pointer where it is
    this.view = { scale, x: at.cx - at.pane.x - at.ix * scale, y: at.cy - at.pane.y - at.iy * scale };
    this.fitted = false;
    this.schedule();
  }

  onDown(event) {
    if (!this.scene) return;
    const at = this.locate(event.clientX, event.clientY);
    if (!at) return;
    this.canvas.setPointerCapture(event.pointerId);
    if (this.tool && event.button === 0) {
      this.painting = true;
      this.tool.down(...this.toMask(at.ix, at.iy));
    } else {
      this.panning = { x: event.clientX, y: event.clientY, view: { ...this.view } };
    }
  }

  onMove(event) {
    if (!this.scene) return;
    const at = this.locate(event.clientX, event.clientY);
    if (this.panning) {
      const { x, y, view } = this.panning;
      this.view = { ...view, x: view.x + event.clientX - x, y: view.y + event.clientY - y };
      this.fitted = false;
    } else if (this.painting && at) {
      this.tool.move(...this.toMask(at.ix, at.iy));
    }
    this.pointer = at;
    if (this.tool || this.panning) this.schedule();
  }

  onUp(event) {
    if (this.painting) this.tool.up();
    this.painting = false;
    this.panning = null;
    if (this.canvas.hasPointerCapture(event.pointerId)) this.canvas.releasePointerCapture(event.pointerId);
  }
}
