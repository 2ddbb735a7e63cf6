// A learning curve drawn on a <canvas>: metrics against the training step, one line with a marker per
// evaluation for each shown series, axes with round ticks. No charting library: a few dozen lines do it.

const MARGIN = { left: 52, right: 14, top: 12, bottom: 30 };  // css px around the plot area
const MARKER = 5;  // css px: the side of each evaluation's square marker
const AXIS = '#9aa0a6';
const GRID = '#2c3036';

/** Up to about ``count`` round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]. */
export function ticks(lo, hi, count = 5) {
  const span = hi - lo || 1;
  const raw = span / count, power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/** The x range (steps) and y range (values) that hold every shown point; mIoU-like metrics keep 0..1 in view. */
export function ranges(points, names) {
  let x0 = Infinity, x1 = -Infinity, y0 = 0, y1 = 1;
  for (const p of points) {
    for (const name of names) {
      const v = p.metrics[name];
      if (v === undefined) continue;
      x0 = Math.min(x0, p.step); x1 = Math.max(x1, p.step);
      y0 = Math.min(y0, v); y1 = Math.max(y1, v);
    }
  }
  if (x0 === Infinity) { x0 = 0; x1 = 1; }
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  return { x0, x1, y0, y1 };
}

export class Plot {
  constructor(canvas) {
    this.canvas = canvas;
  }

  /** Draw ``series`` ([{name, colour: [r, g, b]}]) of ``points`` ([{step, metrics}], by step). The plot area and
   * the ranges are left on the canvas's data attributes (box: css px left, top, width, height), so a reader of the
   * page (a test) can tell where each point went. */
  draw(points, series) {
    const { canvas } = this;
    const dpr = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const box = { left: MARGIN.left, top: MARGIN.top, width: width - MARGIN.left - MARGIN.right,
      height: height - MARGIN.top - MARGIN.bottom };
    const { x0, x1, y0, y1 } = ranges(points, series.map((s) => s.name));
    const px = (step) => box.left + ((step - x0) / (x1 - x0)) * box.width;
    const py = (v) => box.top + (1 - (v - y0) / (y1 - y0)) * box.height;
    Object.assign(canvas.dataset, { box: [box.left, box.top, box.width, box.height].join(','),
      x0, x1, y0, y1, points: points.length });

    ctx.font = '11px system-ui, sans-serif';
    ctx.lineWidth = 1;
    ctx.fillStyle = AXIS;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (const v of ticks(y0, y1, 8)) {
      const y = Math.round(py(v)) + 0.5;
      ctx.strokeStyle = GRID;
      ctx.beginPath(); ctx.moveTo(box.left, y); ctx.lineTo(box.left + box.width, y); ctx.stroke();
      ctx.fillText(String(v), box.left - 6, y);
    }
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (const s of ticks(x0, x1, 6).filter(Number.isInteger)) {
      const x = Math.round(px(s)) + 0.5;
      ctx.strokeStyle = GRID;
      ctx.beginPath(); ctx.moveTo(x, box.top); ctx.lineTo(x, box.top + box.height); ctx.stroke();
      ctx.fillText(String(s), x, box.top + box.height + 6);
    }
    ctx.fillText('step', box.left + box.width / 2, box.top + box.height + 17);
    ctx.strokeStyle = AXIS;
    ctx.strokeRect(box.left + 0.5, box.top + 0.5, box.width, box.height);

    // Every line first, then every marker: a marker's centre shows its own series' colour.
    ctx.lineWidth = 2;
    for (const { name, colour } of series) {
      ctx.strokeStyle = `rgb(${colour.join(',')})`;
      ctx.beginPath();
      let started = false;
      for (const p of points) {
        const v = p.metrics[name];
        if (v === undefined) continue;  // not measured at this step
        if (started) ctx.lineTo(px(p.step), py(v)); else ctx.moveTo(px(p.step), py(v));
        started = true;
      }
      ctx.stroke();
    }
    for (const { name, colour } of series) {
      ctx.fillStyle = `rgb(${colour.join(',')})`;
      for (const p of points) {
        const v = p.metrics[name];
        if (v !== undefined) ctx.fillRect(px(p.step) - MARKER / 2, py(v) - MARKER / 2, MARKER, MARKER);
      }
    }
    if (!points.length) {
      ctx.fillStyle = AXIS;
      ctx.textAlign = 'center';
      ctx.textBaseline = 'middle';
      ctx.fillText('No evaluation posted yet', box.left + box.width / 2, box.top + box.height / 2);
    }
  }
}
