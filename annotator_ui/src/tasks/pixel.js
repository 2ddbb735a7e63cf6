// Pixel-level task: paint the mask's pixels wrong (2) or correct (1) with a brush; 0 = unmarked.
// Painting happens in mask coordinates (a PSR lattice mask is painted cell by cell), and only the
// brush's footprint is touched per stroke step; submit sends the marks as a gray PNG.

import { el } from '../dom.js';
import { bytesToBase64, encodeGrayPng } from '../png.js';

const COLOURS = [[0, 0, 0, 0], [40, 220, 90, 255], [255, 40, 40, 255]];  // unmarked, correct, wrong
const TOOLS = { wrong: 2, correct: 1, erase: 0 };
const HISTORY = 50;

export class PixelTask {
  static kind = 'pixel';

  constructor({ prepared, viewer }) {
    this.prepared = prepared;
    this.viewer = viewer;
    const { width, height } = prepared.masks[0];
    this.width = width;
    this.height = height;
    this.marks = new Uint8Array(width * height);
    this.paint = document.createElement('canvas');
    this.paint.width = width;
    this.paint.height = height;
    this.pctx = this.paint.getContext('2d');
    this.radius = Math.max(1, Math.round(Math.max(width, height) / 64));
    this.value = TOOLS.wrong;
    this.undoStack = [];
    this.redoStack = [];
  }

  mount(panel) {
    const { image, masks, rect } = this.prepared;
    this.viewer.setScene({ image, overlays: [masks[0].layers], rect, paint: this.paint, labels: null });
    this.viewer.tool = this;
    const tool = (name, label, key) => {
      const b = el('button', { type: 'button', className: 'tool', 'data-tool': name }, label, el('kbd', {}, key));
      b.addEventListener('click', () => this.setTool(name));
      return b;
    };
    this.tools = [tool('wrong', 'Wrong', 'W'), tool('correct', 'Correct', 'C'), tool('erase', 'Erase', 'E')];
    this.sizeLabel = el('span', { id: 'brush-size' });
    const undo = el('button', { type: 'button', id: 'undo' }, 'Undo ', el('kbd', {}, 'Ctrl+Z'));
    undo.addEventListener('click', () => this.undo());
    const redo = el('button', { type: 'button', id: 'redo' }, 'Redo ', el('kbd', {}, 'Ctrl+Shift+Z'));
    redo.addEventListener('click', () => this.redo());
    panel.replaceChildren(
      el('h2', {}, 'Paint what is wrong'),
      el('p', { className: 'hint' }, 'Red: wrong, green: correct, unpainted: no opinion. Enter submits.'),
      el('div', { className: 'tools' }, ...this.tools),
      el('div', { className: 'brush' }, 'Brush ', this.sizeLabel, ' ', el('kbd', {}, '['), ' ', el('kbd', {}, ']')),
      el('div', { className: 'history' }, undo, redo),
    );
    this.setTool('wrong');
    this.showSize();
  }

  setTool(name) {
    this.value = TOOLS[name];
    for (const b of this.tools) b.classList.toggle('chosen', b.dataset.tool === name);
  }

  showSize() { this.sizeLabel.textContent = `${2 * this.radius + 1} px`; this.viewer.schedule(); }

  handle(action, event) {
    if (action === 'tool-wrong') this.setTool('wrong');
    else if (action === 'tool-correct') this.setTool('correct');
    else if (action === 'tool-erase') this.setTool('erase');
    else if (action === 'brush-smaller') { this.radius = Math.max(0, Math.floor(this.radius / 1.25)); this.showSize(); }
    else if (action === 'brush-larger') { this.radius = Math.min(256, Math.ceil(this.radius * 1.25) || 1); this.showSize(); }
    else if (action === 'undo') this.undo();
    else if (action === 'redo') this.redo();
    else return false;
    event?.preventDefault();
    return true;
  }

  // --- the brush (called by the viewer with mask coordinates) ----------------------------
  down(mx, my) {
    this.emptyConfirmed = false;
    this.undoStack.push(this.marks.slice());
    if (this.undoStack.length > HISTORY) this.undoStack.shift();
    this.redoStack = [];
    this.last = [mx, my];
    this.stamp(mx, my);
  }

  move(mx, my) {
    const [x0, y0] = this.last;
    const steps = Math.ceil(Math.hypot(mx - x0, my - y0) / Math.max(0.5, this.radius / 2));
    for (let i = 1; i <= steps; i++) this.stamp(x0 + (mx - x0) * i / steps, y0 + (my - y0) * i / steps);
    this.last = [mx, my];
  }

  up() { this.last = null; }

  /** Mark every mask pixel whose centre lies within the brush radius of (mx, my) (radius 0: the pixel under it). */
  stamp(mx, my) {
    const r = this.radius;
    const x0 = Math.max(0, Math.floor(mx - r)), x1 = Math.min(this.width - 1, Math.floor(mx + r));
    const y0 = Math.max(0, Math.floor(my - r)), y1 = Math.min(this.height - 1, Math.floor(my + r));
    if (x0 > x1 || y0 > y1) return;
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        const inside = r === 0 || (x + 0.5 - mx) ** 2 + (y + 0.5 - my) ** 2 <= r * r;
        if (inside) this.marks[y * this.width + x] = this.value;
      }
    }
    this.refresh(x0, y0, x1 - x0 + 1, y1 - y0 + 1);
  }

  /** Repaint the paint layer over a rectangle of mask pixels from the marks. */
  refresh(x = 0, y = 0, w = this.width, h = this.height) {
    const image = new ImageData(w, h);
    for (let j = 0; j < h; j++) {
      for (let i = 0; i < w; i++) image.data.set(COLOURS[this.marks[(y + j) * this.width + x + i]], 4 * (j * w + i));
    }
    this.pctx.putImageData(image, x, y);
    this.viewer.schedule();
  }

  undo() {
    if (!this.undoStack.length) return;
    this.redoStack.push(this.marks);
    this.marks = this.undoStack.pop();
    this.refresh();
  }

  redo() {
    if (!this.redoStack.length) return;
    this.undoStack.push(this.marks);
    this.marks = this.redoStack.pop();
    this.refresh();
  }

  async answer() {
    if (!this.marks.some((v) => v !== 0) && !this.emptyConfirmed) {  // an Enter before any paint: ask first
      this.emptyConfirmed = true;
      throw new Error('Nothing is painted. Press Enter again to send it so (no pixel marked: no opinion anywhere), ' +
        'or paint what is wrong or correct first.');
    }
    const png = await encodeGrayPng(this.width, this.height, this.marks);
    return { pixels: { format: 'png', data: bytesToBase64(png) } };
  }
}
