// The Tab button of the tasks that show several masks (pairwise, best of N): from side by side to
// one mask at a time, then each Tab shows the next mask in place.

import { el } from '../dom.js';

/** The button, and `flip()` for the Tab key; ``next`` names what a Tab does once one mask is shown. */
export function layoutToggle(viewer, next) {
  const button = el('button', { type: 'button', id: 'flip' }, 'One at a time ', el('kbd', {}, 'Tab'));
  const flip = () => {
    if (viewer.layout === 'side') {
      viewer.setLayout('single');
      button.firstChild.textContent = `${next} `;
    } else {
      viewer.flip();
    }
  };
  button.addEventListener('click', flip);
  return { button, flip };
}
