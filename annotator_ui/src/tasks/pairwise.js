// Pairwise task: two masks of one image, side by side or flipped in place with Tab; choosing submits.

import { el } from '../dom.js';
import { layoutToggle } from './layout.js';

export class PairwiseTask {
  static kind = 'pairwise';

  constructor({ prepared, viewer, submit }) {
    this.prepared = prepared;
    this.viewer = viewer;
    this.submit = submit;
    this.preference = null;
  }

  mount(panel) {
    const { image, masks, rect } = this.prepared;
    this.viewer.setScene({ image, overlays: masks.map((m) => m.layers), rect, paint: null, labels: ['A', 'B'] }, 'side');
    const choice = (label, preference, keys) => {
      const b = el('button', { type: 'button', className: 'choice', 'data-preference': preference },
        label, el('kbd', {}, keys));
      b.addEventListener('click', () => this.choose(preference));
      return b;
    };
    const layout = layoutToggle(this.viewer, 'Flip A ↔ B');
    this.flip = layout.flip;
    panel.replaceChildren(
      el('h2', {}, 'Which mask is better?'),
      el('div', { className: 'choices' },
        choice('A is better', 'a', 'A / ←'), choice('Tie', 'tie', '='), choice('B is better', 'b', 'B / →')),
      layout.button,
    );
  }

  choose(preference) {
    this.preference = preference;
    this.submit();
  }

  handle(action) {
    if (action === 'prefer-a') this.choose('a');
    else if (action === 'prefer-b') this.choose('b');
    else if (action === 'prefer-tie') this.choose('tie');
    else if (action === 'flip') this.flip();
    else return false;
    return true;
  }

  answer() {
    if (!this.preference) throw new Error('Choose A, B or tie.');
    return { preference: this.preference };
  }
}
