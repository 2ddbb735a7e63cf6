// The run's gallery: per image, the policy's argmax mask and one mask sampled from it, each over the image in the
// annotator's overlay palette (overlay.js), background left clear as the annotator shows it at first.

import { el } from '../dom.js';
import { MaskLayers } from '../overlay.js';
import { base64ToBytes, decodeIndexPng } from '../png.js';

const SIDE = 150;  // css px of each pane (the CSS says the same)
const ALPHA = 0.6;  // the masks' opacity over the image
const IMAGE_FILTER = 'brightness(0.6) saturate(0.3)';  // the annotator's default view: the overlay's colours stand out
const HIDDEN = new Set([0]);  // background

export class Gallery {
  constructor(root, api) {
    this.root = root;
    this.api = api;
    this.images = new Map();  // image url -> Promise of its ImageBitmap (the same images at every evaluation)
    this.shown = null;  // key of the gallery drawn: redrawn only when a new one arrives
  }

  image(url) {
    if (!this.images.has(url)) {
      const loading = this.api.image(url).then((blob) => createImageBitmap(blob));
      loading.catch(() => this.images.delete(url));  // try again at the next refresh
      this.images.set(url, loading);
    }
    return this.images.get(url);
  }

  /** Show ``gallery`` (RunGallery or null) of ``runId``; resolves once every pane is drawn. */
  async render(runId, gallery) {
    const key = gallery ? `${runId}:${gallery.step}:${gallery.at}` : `${runId}:none`;
    if (key === this.shown) return;
    if (!gallery) {
      this.root.replaceChildren(el('p', { className: 'hint' }, 'No gallery posted yet: the learner posts one with '
        + 'each evaluation (rss train --reward-source remote).'));
      this.shown = key;
      return;
    }
    const figures = await Promise.all(gallery.items.map(async (item) => {
      const [bitmap, argmax, sampled] = await Promise.all([
        this.image(item.image_url), decodeIndexPng(base64ToBytes(item.argmax.data)),
        decodeIndexPng(base64ToBytes(item.sampled.data))]);
      const panes = [['argmax', argmax], ['sampled', sampled]].map(([name, mask]) => {
        const canvas = el('canvas', { 'data-image': item.image_id, 'data-mask': name });
        draw(canvas, bitmap, new MaskLayers(mask, HIDDEN));
        return el('div', { className: 'pane' }, canvas, el('span', {}, name));
      });
      return el('figure', {}, el('figcaption', {}, item.image_id), el('div', { className: 'pair' }, ...panes));
    }));
    this.root.replaceChildren(...figures);
    this.shown = key;
  }
}

/** The image fitted into the pane, the mask's fill stretched over the same rectangle (a gallery mask may be a
 * subsampling of the image's pixels), nearest-neighbour so each mask pixel stays a crisp cell. */
function draw(canvas, bitmap, layers) {
  const dpr = window.devicePixelRatio || 1;
  canvas.width = canvas.height = Math.round(SIDE * dpr);
  const ctx = canvas.getContext('2d');
  const scale = Math.min(canvas.width / bitmap.width, canvas.height / bitmap.height);
  const w = bitmap.width * scale, h = bitmap.height * scale;
  const x = (canvas.width - w) / 2, y = (canvas.height - h) / 2;
  ctx.imageSmoothingEnabled = false;
  ctx.filter = IMAGE_FILTER;
  ctx.drawImage(bitmap, x, y, w, h);
  ctx.filter = 'none';
  ctx.globalAlpha = ALPHA;
  ctx.drawImage(layers.fill, x, y, w, h);
  ctx.globalAlpha = 1;
}
