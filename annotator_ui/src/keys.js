// Every hotkey in one table: the key handler dispatches from it and the help overlay renders
// it, so the two never drift. `tasks` limits an entry to those task kinds (absent: always).
// `answers`: the key sends (or is part of) an answer, so a held key's auto-repeat and a press in a task's
// first ANSWER_GUARD_MS (annotator_ui/src/main.js) are ignored.

const DIGITS = Array.from({ length: 10 }, (_, d) => String(d));
const BEST_OF = 8;  // a best-of-N task shows at most this many masks (rss_core/schemas.py BEST_OF)
const MASK_NUMBERS = Array.from({ length: BEST_OF }, (_, d) => String(d + 1));

export const HOTKEYS = [
  { keys: ['?'], action: 'help', help: 'Show or hide this help' },
  { keys: DIGITS, label: '0 – 9', action: 'score', tasks: ['score'], help: 'Set the score (10: slider or buttons)' },
  { keys: ['ArrowUp', 'ArrowDown'], label: '↑ / ↓', action: 'nudge', tasks: ['score'], help: 'Score one up / down' },
  { keys: ['Enter'], action: 'submit', answers: true, tasks: ['score', 'pairwise', 'best', 'pixel', 'point'],
    help: 'Submit the answer (a choice submits by itself; Enter sends it again after an error)' },
  { keys: ['A', 'ArrowLeft'], label: 'A / ←', action: 'prefer-a', answers: true, tasks: ['pairwise'], help: 'Mask A is better (submits)' },
  { keys: ['B', 'ArrowRight'], label: 'B / →', action: 'prefer-b', answers: true, tasks: ['pairwise'], help: 'Mask B is better (submits)' },
  { keys: ['='], action: 'prefer-tie', answers: true, tasks: ['pairwise'], help: 'Tie: neither is better (submits)' },
  { keys: MASK_NUMBERS, label: `1 – ${BEST_OF}`, action: 'choose', answers: true, tasks: ['best'], help: 'Mask n is the best (submits)' },
  { keys: ['Tab'], action: 'flip', tasks: ['pairwise', 'best'],
    help: 'Side by side ↔ one at a time; then flips to the next mask' },
  { keys: ['Y'], action: 'verdict-yes', answers: true, tasks: ['point'], help: 'Yes: the mask\'s class is right at this point' },
  { keys: ['N'], action: 'verdict-no', answers: true, tasks: ['point'], help: 'No: it is not that class there' },
  { keys: ['U'], action: 'verdict-unsure', answers: true, tasks: ['point'], help: 'Can\'t tell (no reward at this point)' },
  { keys: ['Backspace'], action: 'point-back', tasks: ['point'], help: 'Back one point, to answer it again' },
  { keys: ['S'], action: 'skip', answers: true, help: 'Skip this task (it goes to another rater)' },
  { keys: ['Z'], action: 'undo-answer',
    help: 'Undo the last answer, for a few seconds after it: that task again, to answer anew' },
  { keys: ['W'], action: 'tool-wrong', tasks: ['pixel'], help: 'Brush: paint wrong regions (red)' },
  { keys: ['C'], action: 'tool-correct', tasks: ['pixel'], help: 'Brush: paint correct regions (green)' },
  { keys: ['E'], action: 'tool-erase', tasks: ['pixel'], help: 'Eraser' },
  { keys: ['['], action: 'brush-smaller', tasks: ['pixel'], help: 'Smaller brush' },
  { keys: [']'], action: 'brush-larger', tasks: ['pixel'], help: 'Larger brush' },
  { keys: ['Ctrl+Z'], action: 'undo', tasks: ['pixel'], help: 'Undo a stroke' },
  { keys: ['Ctrl+Shift+Z', 'Ctrl+Y'], label: 'Ctrl+Shift+Z / Ctrl+Y', action: 'redo', tasks: ['pixel'], help: 'Redo' },
  { keys: [' '], label: 'Space', action: 'peek', help: 'Hold: hide the overlay to see the image; tap: toggle it' },
  { keys: ['O'], action: 'opacity-up', help: 'More overlay opacity' },
  { keys: ['Shift+O'], action: 'opacity-down', help: 'Less overlay opacity' },
  { keys: ['R'], action: 'reset-view', help: 'Reset zoom and pan' },
  { keys: ['M'], action: 'mask-style', help: 'Masks drawn as fill, outline (class boundaries only) or both' },
  { keys: ['D'], action: 'image-dimmer', help: 'Dim the image (the View sliders: brightness, contrast, colour)' },
  { keys: ['Shift+D'], action: 'image-brighter', help: 'Brighten the image' },
];

/** Mouse gestures, shown in the help with the keys. */
export const MOUSE = [
  ['Wheel', 'Zoom at the pointer'],
  ['Drag', 'Pan (pixel tasks: paint; pan with the right or middle button)'],
];

function parse(spec) {
  const parts = spec === '+' ? ['+'] : spec.split('+');
  const key = parts.pop();
  return { key, ctrl: parts.includes('Ctrl'), shift: parts.includes('Shift') };
}

function matches(spec, event) {
  const { key, ctrl, shift } = parse(spec);
  if (ctrl !== (event.ctrlKey || event.metaKey)) return false;
  if (event.altKey) return false;
  if (key.length === 1 && /[a-z]/i.test(key)) {  // letters: case-insensitive, Shift only when asked for
    return event.key.toLowerCase() === key.toLowerCase() && shift === event.shiftKey;
  }
  if (shift && !event.shiftKey) return false;
  return event.key === key;  // symbols ('?', '[', '='): whatever modifiers the layout needs
}

/** The table entry an event triggers for the current task kind (null kind: no task shown). */
export function lookup(event, kind) {
  return HOTKEYS.find((h) => (!h.tasks || h.tasks.includes(kind)) && h.keys.some((k) => matches(k, event))) || null;
}

/** The entry an event triggers for any task kind: what a key would do once a task is shown. */
export function lookupAny(event) {
  return HOTKEYS.find((h) => h.keys.some((k) => matches(k, event))) || null;
}

function keyLabel(entry) {
  return entry.label || entry.keys.map((k) => (k === ' ' ? 'Space' : k)).join(' / ');
}

/** The help overlay's table: one row per entry, grouped by where it applies. */
export function renderHelp(container) {
  const table = document.createElement('table');
  table.className = 'hotkeys';
  const head = table.createTHead().insertRow();
  for (const h of ['Key', 'What it does', 'Tasks']) head.appendChild(Object.assign(document.createElement('th'), { textContent: h }));
  const body = table.createTBody();
  const row = (key, help, where) => {
    const tr = body.insertRow();
    const kbd = document.createElement('kbd');
    kbd.textContent = key;
    tr.insertCell().appendChild(kbd);
    tr.insertCell().textContent = help;
    tr.insertCell().textContent = where;
  };
  for (const h of HOTKEYS) row(keyLabel(h), h.help, h.tasks ? h.tasks.join(', ') : 'all');
  for (const [key, help] of MOUSE) row(key, help, 'all');
  container.replaceChildren(table);
  return table;
}

/** The table as Markdown rows (docs/annotator.md's hotkey table is generated from this). */
export function helpMarkdown() {
  const lines = ['| key | what it does | tasks |', '| --- | --- | --- |'];
  for (const h of HOTKEYS) lines.push(`| \`${keyLabel(h)}\` | ${h.help} | ${h.tasks ? h.tasks.join(', ') : 'all'} |`);
  for (const [key, help] of MOUSE) lines.push(`| ${key} | ${help} | all |`);
  return lines.join('\n');
}
