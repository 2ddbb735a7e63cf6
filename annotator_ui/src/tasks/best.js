// Best-of-N task: the N masks of one image in panes labelled 1..N (one at a time with Tab); the
// rater picks the best with its number, which submits {best: its 0-based position in task.samples}.

import { el } from '../dom.js';
import { layoutToggle } from './layout.js';

export class BestTask {
  static kind = 'best';

  constructor({ prepared, viewer, submit }) {
    this.prepared = prepared;
    this.viewer = viewer;
    this.submit = submit;
    this.best = null;
    this.count = prepared.masks.length;
  }

  mount(panel) {
    const { image, masks, rect } = this.prepared;
    const labels = masks.map((_, i) => String(i + 1));
    this.viewer.setScene({ image, overlays: masks.map((m) => m.layers), rect, paint: null, labels }, 'side');
    this.buttons = labels.map((label, i) => {
      const b = el('button', { type: 'button', className: 'choice', 'data-best': i }, `${label} is best`,
        el('kbd', {}, label));
      b.addEventListener('click', () => this.choose(i));
      return b;
    });
    const layout = layoutToggle(this.viewer, 'Next mask');
    this.flip = layout.flip;
    panel.replaceChildren(
      el('h2', {}, 'Which mask is best?'),
      el('p', { className: 'hint' }, `${this.count} masks of one image. Press its number (1–${this.count}) to choose; ` +
        'that submits.'),
      el('div', { className: 'choices best-choices' }, ...this.buttons),
      layout.button,
    );
  }

  choose(index) {
    if (!(index >= 0 && index < this.count)) return false;  // a number past N: not a mask of this task
    this.best = index;
    for (const b of this.buttons) b.classList.toggle('chosen', Number(b.dataset.best) === index);
    this.submit();
    return true;
  }

  handle(action, event) {
    if (action === 'choose') return this.choose(Number(event.key) - 1);
    if (action === 'flip') { this.flip(); return true; }
    return false;
  }

  answer() {
    if (this.best === null) throw new Error(`Choose the best mask: keys 1–${this.count} or its button.`);
    return { best: this.best };
  }
}
