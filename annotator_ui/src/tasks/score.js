// Image-level task: one mask, a score from 0 to 10 (sent as score / 10).

import { el } from '../dom.js';

export class ScoreTask {
  static kind = 'score';

  constructor({ prepared, viewer }) {
    this.prepared = prepared;
    this.viewer = viewer;
    this.value = null;
  }

  mount(panel) {
    const { image, masks, rect } = this.prepared;
    this.viewer.setScene({ image, overlays: [masks[0].layers], rect, paint: null, labels: null });
    this.output = el('output', { id: 'score-value', className: 'score-value' }, '–');
    this.slider = el('input', { type: 'range', min: 0, max: 10, step: 1, value: 5, id: 'score-slider',
      'aria-label': 'Score from 0 to 10' });
    this.slider.addEventListener('input', () => this.set(Number(this.slider.value)));
    this.buttons = Array.from({ length: 11 }, (_, n) => {
      const b = el('button', { type: 'button', className: 'score-button', 'data-score': n }, String(n));
      b.addEventListener('click', () => this.set(n));
      return b;
    });
    panel.replaceChildren(
      el('h2', {}, 'How good is this mask?'),
      el('p', { className: 'hint' }, '0 = useless, 10 = perfect. Keys 0–9, ↑/↓, then Enter.'),
      el('div', { className: 'score-row' }, this.slider, this.output),
      el('div', { className: 'score-buttons' }, ...this.buttons),
    );
  }

  set(value) {
    this.value = Math.min(10, Math.max(0, value));
    this.slider.value = this.value;
    this.output.textContent = String(this.value);
    for (const b of this.buttons) b.classList.toggle('chosen', Number(b.dataset.score) === this.value);
  }

  handle(action, event) {
    if (action === 'score') this.set(Number(event.key));
    else if (action === 'nudge') this.set((this.value ?? 5) + (event.key === 'ArrowUp' ? 1 : -1));
    else return false;
    return true;
  }

  /** The rating body, or an Error the rater must fix first. */
  answer() {
    if (this.value === null) throw new Error('Pick a score first: keys 0–9, the slider or the buttons.');
    return { score: this.value / 10 };
  }
}
