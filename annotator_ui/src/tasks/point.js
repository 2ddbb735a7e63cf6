// Point task: one mask over the image and a few of its cells, asked one at a time: "Is this
// <class>?" (the mask's class there). Y yes, N no, U can't tell, Backspace goes back one point to
// answer it again; the last answer submits {verdicts: [...]}, one per point in task order.

import { FOCUS_MARGIN } from '../canvas.js';
import { el } from '../dom.js';
import { classColour } from '../overlay.js';

const VERDICTS = { 'verdict-yes': 'yes', 'verdict-no': 'no', 'verdict-unsure': 'unsure' };
const SHOWN = { yes: 'yes', no: 'no', unsure: "can't tell" };

export class PointTask {
  static kind = 'point';

  constructor({ prepared, viewer, submit }) {
    this.prepared = prepared;
    this.viewer = viewer;
    this.submit = submit;
    this.points = prepared.task.points || [];
    this.verdicts = [];  // the answers so far; the current point is verdicts.length
  }

  mount(panel) {
    const { image, masks, rect } = this.prepared;
    this.viewer.setScene({ image, overlays: [masks[0].layers], rect, paint: null, labels: null, margin: FOCUS_MARGIN });
    const button = (action, label, key) => {
      const b = el('button', { type: 'button', className: 'choice', 'data-action': action }, label, el('kbd', {}, key));
      b.addEventListener('click', () => this.handle(action));
      return b;
    };
    this.progress = el('p', { id: 'point-progress', className: 'hint' });
    this.question = el('h2', { id: 'point-question' });
    this.answered = el('ol', { id: 'point-answers', className: 'point-answers' });
    panel.replaceChildren(
      this.progress,
      this.question,
      el('p', { className: 'hint' }, 'Look inside the cyan square: is the mask right there?'),
      el('div', { className: 'choices' },
        button('verdict-yes', 'Yes', 'Y'), button('verdict-no', 'No', 'N'), button('verdict-unsure', "Can't tell", 'U'),
        button('point-back', 'Back one point', 'Backspace')),
      this.answered,
    );
    this.render();
  }

  render() {
    const { class_names: names } = this.prepared.task;
    const i = Math.min(this.verdicts.length, this.points.length - 1);
    const point = this.points[i];
    this.progress.textContent = `point ${i + 1} of ${this.points.length}`;
    const [r, g, b] = classColour(point.class_id);
    this.question.replaceChildren('Is this ',
      el('span', { className: 'swatch', style: `background: rgb(${r},${g},${b})` }),
      el('b', { className: 'point-class' }, names[point.class_id] ?? `class ${point.class_id}`), '?');
    this.answered.replaceChildren(...this.verdicts.map((v, n) =>
      el('li', { className: `verdict-${v}` }, `${names[this.points[n].class_id] ?? this.points[n].class_id}: ${SHOWN[v]}`)));
    this.viewer.setFocus({ x: point.x, y: point.y });
  }

  handle(action, event) {
    if (action in VERDICTS) {
      if (event?.repeat) return true;  // a key held down answers one point, not every point after it
      if (this.verdicts.length >= this.points.length) return true;  // all answered: sending (or Enter resends)
      this.verdicts.push(VERDICTS[action]);
      this.render();
      if (this.verdicts.length === this.points.length) this.submit();  // the last answer sends them all
      return true;
    }
    if (action === 'point-back') {
      this.verdicts.pop();
      this.render();
      return true;
    }
    return false;
  }

  answer() {
    if (this.verdicts.length !== this.points.length) {
      throw new Error(`Answer every point first: ${this.points.length - this.verdicts.length} left (Y, N or U).`);
    }
    return { verdicts: [...this.verdicts] };
  }
}
