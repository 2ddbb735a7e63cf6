// How a mask is drawn over the image: the overlay palette, and each mask's fill and outline layers
// (canvases of the mask's own size, redrawn only when the rater shows or hides a class).

// Chosen for overlays, not the dataset's palette (which the task still carries): Okabe & Ito's
// colour-blind safe set without its green and vermillion, which sit next to the brush's correct
// (green) and wrong (red) paint; background a neutral grey, hidden until the rater shows it.
export const OVERLAY_PALETTE = [
  [110, 110, 110],  // background
  [230, 159, 0],  // orange
  [86, 180, 233],  // sky blue
  [204, 121, 167],  // reddish purple
  [240, 228, 66],  // yellow
  [0, 114, 178],  // blue
  [245, 245, 245],  // white
  [148, 103, 189],  // violet
  [30, 30, 30],  // black
];

/** The overlay colour [r, g, b] of class ``i`` (past the palette: its object colours again). */
export function classColour(i) {
  if (i < OVERLAY_PALETTE.length) return OVERLAY_PALETTE[i];
  return OVERLAY_PALETTE[1 + ((i - 1) % (OVERLAY_PALETTE.length - 1))];
}

export const STYLES = ['fill', 'outline', 'both'];  // what M cycles through
export const STYLE_NAMES = { fill: 'fill', outline: 'outline', both: 'fill + outline' };

/**
 * One mask's layers: ``fill`` (every pixel of a shown class in its colour) and ``outline`` (only the
 * pixels at a class boundary, each in its own class's colour, so both sides of a boundary show), both
 * canvases of the mask's size that the Viewer draws with drawImage. A mask wider than 256 px gets a
 * thicker outline, so a boundary stays visible when the mask is shown smaller than its pixels.
 */
export class MaskLayers {
  constructor(mask, hidden = new Set()) {
    this.mask = mask;
    this.width = mask.width;
    this.height = mask.height;
    this.fill = document.createElement('canvas');
    this.outline = document.createElement('canvas');
    for (const c of [this.fill, this.outline]) { c.width = mask.width; c.height = mask.height; }
    this.edge = boundary(mask);
    this.render(hidden);
  }

  /** Repaint both layers with the classes in ``hidden`` left clear. */
  render(hidden) {
    const lut = new Uint32Array(256);  // RGBA as little-endian uint32; 0 = transparent
    for (let i = 0; i < 256; i++) {
      if (hidden.has(i)) continue;
      const [r, g, b] = classColour(i);
      lut[i] = (255 << 24 | b << 16 | g << 8 | r) >>> 0;
    }
    const { width, height, data } = this.mask;
    const fill = new ImageData(width, height), outline = new ImageData(width, height);
    const f = new Uint32Array(fill.data.buffer), o = new Uint32Array(outline.data.buffer);
    for (let i = 0; i < data.length; i++) {
      const c = lut[data[i]];
      f[i] = c;
      if (this.edge[i]) o[i] = c;
    }
    this.fill.getContext('2d').putImageData(fill, 0, 0);
    this.outline.getContext('2d').putImageData(outline, 0, 0);
    this.hiddenKey = [...hidden].sort().join(',');
  }

  /** Repaint only when ``hidden`` differs from what the layers show. */
  update(hidden) {
    if ([...hidden].sort().join(',') !== this.hiddenKey) this.render(hidden);
  }
}

/** 1 where a mask pixel's class differs from a neighbour's ``t`` pixels up, down, left or right. */
function boundary({ width, height, data }) {
  const t = Math.max(1, Math.round(Math.max(width, height) / 256));
  const edge = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x, c = data[i];
      if ((x >= t && data[i - t] !== c) || (x + t < width && data[i + t] !== c) ||
          (y >= t && data[i - t * width] !== c) || (y + t < height && data[i + t * width] !== c)) edge[i] = 1;
    }
  }
  return edge;
}
