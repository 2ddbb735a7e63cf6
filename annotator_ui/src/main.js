// The annotator: sign-in, the task loop (lease, prefetch, show, answer), status, hotkeys, messages.

import { Api, ApiError } from './api.js';
import { Viewer, maskRect } from './canvas.js';
import { el } from './dom.js';
import { lookup, lookupAny, renderHelp } from './keys.js';
import { MaskLayers, STYLES, STYLE_NAMES, classColour } from './overlay.js';
import { base64ToBytes, decodeIndexPng } from './png.js';
import { Stopwatch } from './stopwatch.js';
import { Session } from './store.js';
import { BestTask } from './tasks/best.js';
import { PairwiseTask } from './tasks/pairwise.js';
import { PixelTask } from './tasks/pixel.js';
import { PointTask } from './tasks/point.js';
import { ScoreTask } from './tasks/score.js';

const VIEWS = { score: ScoreTask, pairwise: PairwiseTask, best: BestTask, pixel: PixelTask, point: PointTask };
const WAIT_S = 10;  // one long poll for a task (the service holds the request, and its shutdown, that long)
const LEASE_MARGIN_MS = 3000;  // a prefetched task with less lease left than this is not shown
const RETRY_MS = 2000;  // after a network error while fetching tasks
const QUEUE_EVERY_MS = 5000;
const TAP_MS = 250;  // Space held longer than this peeks; shorter toggles
// A new task takes answers only once it has been on screen this long: a key pressed twice sends one answer,
// not one to the task after it (earlier presses are ignored, silently; body[data-accepting] says when).
const ANSWER_GUARD_MS = 150;
const UNDO_MARGIN_MS = 800;  // the Undo is offered until this long before the service's amend window closes
const MAX_RATER_SECONDS = 86400;  // rss_core/schemas.py
// An answer the service has not acknowledged: a spinner after PENDING_MS (a quick answer shows none), and after
// SLOW_MS a message with Retry (Enter retries too).
const PENDING_MS = 300;
const SLOW_MS = 4000;
const REFUSED_MS = 4000;  // how long a refused key's notice stays
// While a slider has focus its own keys move it and answer nothing; every other hotkey reaches the task.
const SLIDER_KEYS = new Set(['ArrowLeft', 'ArrowRight', 'ArrowUp', 'ArrowDown', 'Home', 'End', 'PageUp', 'PageDown']);

const $ = (selector) => document.querySelector(selector);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class App {
  constructor() {
    this.session = new Session();
    this.api = new Api('', this.session.token);
    this.viewer = new Viewer($('#canvas'));
    this.runs = new Map();  // run_id -> Promise of its RunPublic
    this.current = null;  // {prepared, view}
    this.next = null;  // Promise of the prefetched, prepared task
    this.abort = new AbortController();  // ends the loops of a signed-out session
    this.busy = false;
    this.held = new Map();  // task_id -> task: leases this page holds, not answered, skipped or released
    this.front = [];  // prepared tasks to show before the prefetched one (the task an Undo put aside)
    this.lastAnswer = null;  // {prepared, view, until}: the answer an Undo may replace, until `until` (ms)
    this.acceptAt = Infinity;  // performance.now() from which the current task takes answers
    this.pending = null;  // {task, slow, retry()}: the answer being sent, not yet acknowledged
    this.hiddenClasses = new Set([0]);  // the classes the overlay leaves out (the legend's toggles): background
    this.refusedCount = 0;
    renderHelp($('#help-table'));
    this.bind();
    this.setImage();  // the sliders' defaults: the image a little dimmer and paler, so the overlay's colours stand out
    this.session.addEventListener('change', () => this.renderStatus());
    this.renderStatus();
    if (this.session.signedIn) this.resume();
    else this.showSignIn();
  }

  // --- messages: every error reaches the rater -------------------------------------------
  /** Show ``text``; ``action`` ({label, run}) adds a button that does it and dismisses the message. */
  message(text, kind = 'error', action = null) {
    const box = $('#messages');
    for (const m of box.children) if (m.dataset.text === text) m.remove();
    const close = el('button', { type: 'button', className: 'close', 'aria-label': 'Dismiss' }, '×');
    const button = action ? el('button', { type: 'button', className: 'retry' }, action.label) : null;
    const node = el('div', { className: `message ${kind}`, role: kind === 'error' ? 'alert' : 'status' },
      el('span', {}, text), button, close);
    if (button) button.addEventListener('click', () => { node.remove(); action.run(); });
    node.dataset.text = text;
    close.addEventListener('click', () => node.remove());
    box.append(node);
    if (kind === 'info') setTimeout(() => node.remove(), 15000);
    return node;
  }

  clearErrors() {
    for (const m of [...$('#messages').children]) if (m.classList.contains('error')) m.remove();
  }

  // --- sign-in -------------------------------------------------------------------------------
  showSignIn() {
    $('#signin-view').hidden = false;
    $('#work').hidden = true;
    document.body.dataset.state = 'signed-out';
    $('#token').focus();
  }

  async signIn(token) {
    const api = new Api('', token);
    try {
      const me = await api.me();
      this.api = api;
      this.session.signIn(token, me.name);
      this.clearErrors();
      this.start();
    } catch (err) {
      if (err.status === 401) this.message('Sign-in failed: the service does not know that token.');
      else if (err.status === 403) this.message('Sign-in failed: that is not a rater token (a learner token?).');
      else this.message(`Sign-in failed: ${err.message}`);
    }
  }

  async resume() {
    try {
      await this.api.me();
      this.start();
    } catch (err) {
      if (err.status === 401 || err.status === 403) {
        this.signOut();
        this.message('Your saved token is no longer accepted; sign in again.');
      } else {
        this.message(err.message);
        this.start();  // the service may come back: the task loop retries
      }
    }
  }

  signOut() {
    const api = this.api;
    const held = [...this.held.values()];  // the shown and the prefetched task: back to the queue at once
    this.held.clear();
    for (const task of held) api.release(task).catch(() => {});  // best effort: unreleased, a lease expires
    this.front = [];
    this.lastAnswer = null;
    this.renderUndo();
    this.abort.abort();
    this.abort = new AbortController();
    clearTimeout(this.expiryTimer);
    clearInterval(this.queueTimer);
    this.current = null;
    this.next = null;
    this.viewer.clear();
    this.session.signOut();
    this.api = new Api('', null);
    this.showSignIn();
  }

  start() {
    $('#signin-view').hidden = true;
    $('#work').hidden = false;
    this.viewer.resize();
    this.pollQueue();
    this.queueTimer = setInterval(() => this.pollQueue(), QUEUE_EVERY_MS);
    this.advance();
  }

  async pollQueue() {
    try {
      this.session.setQueue(await this.api.queue());
    } catch (err) {
      this.message(`Queue depth: ${err.message}`);
    }
  }

  // --- the task loop -----------------------------------------------------------------------
  /** Lease tasks until one can be shown, and prepare it (image, masks decoded once). */
  async fetchPrepared(signal) {
    while (!signal.aborted) {
      let task;
      const asked = performance.now();  // the long poll's wait for a task is in rss:lease
      try {
        task = await this.api.nextTask(WAIT_S, signal);
      } catch (err) {
        if (signal.aborted) return null;
        this.message(err.message);
        await sleep(RETRY_MS);
        continue;
      }
      if (!task) continue;  // none within WAIT_S: ask again
      if (signal.aborted) { this.api.release(task).catch(() => {}); return null; }
      this.held.set(task.task_id, task);
      this.pollQueue();  // the count of what is left for this rater changed
      task.leaseMs = task.lease_expires_at * 1000 - Date.now();  // how long this lease lasts
      try {
        const leased = performance.now();
        const prepared = await this.prepare(task);
        prepared.readyAt = performance.now();
        const detail = { taskId: task.task_id };
        performance.measure('rss:lease', { start: asked, end: leased, detail });
        performance.measure('rss:prepare', { start: leased, end: prepared.readyAt, detail });
        return prepared;
      } catch (err) {
        if (signal.aborted) return null;
        this.message(`Task ${task.task_id} could not be shown (${err.message}); it was skipped.`);
        this.held.delete(task.task_id);
        await this.api.skip(task).catch((e) => this.message(e.message));
      }
    }
    return null;
  }

  run(runId) {
    if (!this.runs.has(runId)) {
      const request = this.api.run(runId);
      request.catch(() => this.runs.delete(runId));  // retried with the next task
      this.runs.set(runId, request);
    }
    return this.runs.get(runId);
  }

  async prepare(task) {
    const decode = async (sample) => {
      const mask = await decodeIndexPng(base64ToBytes(sample.mask.data));
      return { ...mask, layers: new MaskLayers(mask, this.hiddenClasses) };
    };
    const [run, image, masks] = await Promise.all([
      this.run(task.run_id),
      this.api.image(task.image_url).then((blob) => createImageBitmap(blob)),
      Promise.all(task.samples.map(decode)),
    ]);
    const rect = maskRect(task.grid, masks[0].width, masks[0].height, image.width, image.height, run.image_size);
    return { task, run, image, masks, rect };
  }

  leaseLeft(task) { return task.lease_expires_at * 1000 - Date.now(); }

  /** Show the prefetched task (or wait for one), then prefetch the one after it. */
  async advance(submittedAt = null) {
    clearTimeout(this.expiryTimer);
    this.current = null;
    this.busy = false;
    const { signal } = this.abort;
    document.body.dataset.state = 'waiting';
    for (;;) {
      let pending;
      if (this.front.length) pending = Promise.resolve(this.front.shift());
      else {
        pending = this.next || this.fetchPrepared(signal);
        this.next = null;
      }
      if (!this.current) this.showWaiting(true);
      const prepared = await pending;
      if (!prepared || signal.aborted) return;
      const margin = Math.min(LEASE_MARGIN_MS, prepared.task.leaseMs / 4);
      if (this.leaseLeft(prepared.task) > margin) {
        this.show(prepared, submittedAt);
        break;
      }
      // held too long while the rater worked on the previous one: give it back now, for someone else
      this.release(prepared.task);
    }
    if (!this.next) this.next = this.fetchPrepared(signal);
  }

  /** Give a leased task back unanswered (it waits again at once); an error only when it says something. */
  release(task) {
    this.held.delete(task.task_id);
    this.api.release(task).catch((err) => {
      if (![404, 409, 410].includes(err.status)) this.message(`Giving task ${task.task_id} back: ${err.message}`);
    });
  }

  showWaiting(waiting) {
    $('#waiting').hidden = !waiting;
    if (waiting) {
      this.viewer.clear();
      $('#panel').replaceChildren(el('p', { className: 'hint' }, 'Waiting for a task…'));
      $('#task-info').textContent = '';
    }
  }

  /** Draw a task. ``amend``: an answered task shown again by Undo (``view``: the view to keep, a pixel task's
   * paint); its next answer replaces the first. */
  show(prepared, submittedAt, { amend = false, view = null } = {}) {
    const { task } = prepared;
    if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
    this.viewer.tool = null;
    view = view || new VIEWS[task.kind]({ prepared, viewer: this.viewer, submit: () => this.submit() });
    this.current = { prepared, view, amend };
    prepared.watch = prepared.watch || new Stopwatch();
    this.showWaiting(false);
    for (const m of prepared.masks) m.layers.update(this.hiddenClasses);  // a class hidden since it was prepared
    view.mount($('#panel'));  // draws the scene synchronously
    if (amend) {
      $('#panel').prepend(el('p', { id: 'amending', className: 'amending' },
        'Undo: answer this task again; your new answer replaces the first. S keeps the first.'));
    }
    this.renderLegend(task);
    $('#task-info').textContent = `${task.kind} task ${task.task_id} · image ${task.image_id} · run ${task.run_id}` +
      ` · ratings ${task.ratings_done}/${task.ratings_needed}`;
    document.body.dataset.state = 'task';
    document.body.dataset.taskId = task.task_id;
    document.body.dataset.kind = task.kind;
    document.body.dataset.amending = amend ? '1' : '';
    delete document.body.dataset.accepting;
    this.acceptAt = Infinity;
    if (!amend) this.expiryTimer = setTimeout(() => this.onLeaseExpired(task), Math.max(0, this.leaseLeft(task)));
    requestAnimationFrame(() => {  // the first frame with the task drawn (none while the tab is hidden)
      const shown = performance.mark('rss:task-shown', { detail: { taskId: task.task_id } });
      if (this.current && this.current.prepared === prepared) {
        prepared.watch.start(shown.startTime);
        this.acceptAt = shown.startTime + ANSWER_GUARD_MS;
        setTimeout(() => {
          if (this.current && this.current.prepared === prepared) document.body.dataset.accepting = task.task_id;
        }, ANSWER_GUARD_MS);
      }
      if (submittedAt === null) return;
      performance.measure('rss:submit-to-next', {
        start: submittedAt, end: shown.startTime,
        detail: { taskId: task.task_id, prefetched: prepared.readyAt <= submittedAt },
      });
      // what the rater sees: the answer's key press to the second frame after the next task was drawn
      requestAnimationFrame(() => performance.measure('rss:answer-to-frame', {
        start: submittedAt, end: performance.now(), detail: { taskId: task.task_id, kind: task.kind },
      }));
    });
    this.renderStatus();
  }

  /** The classes in their overlay colours, each a toggle: a hidden class leaves the overlay (fill and outline)
   * for this and every later task, until shown again. */
  renderLegend(task) {
    $('#legend').replaceChildren(...task.class_names.map((name, i) => {
      const [r, g, b] = classColour(i);
      const box = el('input', { type: 'checkbox', 'data-class': i, 'aria-label': `Show ${name}` });
      box.checked = !this.hiddenClasses.has(i);
      const item = el('li', { className: box.checked ? '' : 'off' },
        el('label', {}, box, el('span', { className: 'swatch', style: `background: rgb(${r},${g},${b})` }), name));
      box.addEventListener('change', () => {
        box.blur();  // Space and Enter stay hotkeys
        this.setClassShown(i, box.checked);
        item.className = box.checked ? '' : 'off';
      });
      return item;
    }));
  }

  setClassShown(i, shown) {
    if (shown) this.hiddenClasses.delete(i);
    else this.hiddenClasses.add(i);
    if (this.current) for (const m of this.current.prepared.masks) m.layers.update(this.hiddenClasses);
    this.viewer.schedule();
  }

  cycleStyle() {
    const style = STYLES[(STYLES.indexOf(this.viewer.style) + 1) % STYLES.length];
    this.viewer.setStyle(style);
    $('#style-name').textContent = STYLE_NAMES[style];
    $('#canvas').dataset.style = style;
  }

  setImage() {
    this.viewer.setImage(Number($('#brightness').value) / 100, Number($('#contrast').value) / 100,
      Number($('#colour').value) / 100);
  }

  onLeaseExpired(task) {
    if (!this.current || this.current.prepared.task !== task || this.busy) return;
    this.message(`Your lease on task ${task.task_id} expired: it went back to the queue for another rater. ` +
      'Here is the next task.', 'info');
    this.advance();
  }

  /** Whether the current task takes answers: drawn ANSWER_GUARD_MS ago, and the help is closed. */
  accepting() { return performance.now() >= this.acceptAt && $('#help').hidden; }

  async submit() {
    if (this.busy) { this.refuse('Submit'); return; }
    if (!this.current || !this.accepting()) return;
    const { prepared, view, amend } = this.current;
    const { task } = prepared;
    const started = this.mark('rss:answer', task);
    let answer;
    try {
      answer = await view.answer();
    } catch (err) {
      this.message(err.message);
      return;
    }
    // time on task: first draw to this answer, the tab's hidden time left out (an Undo's time added)
    const seconds = Math.min(MAX_RATER_SECONDS, Math.max(0.001, Math.round(prepared.watch.seconds * 1000) / 1000));
    answer = { ...answer, rater_seconds: seconds };
    if (amend) await this.send(task, (signal) => this.api.amend(task, answer, signal), 'amended', started);
    else await this.send(task, (signal) => this.api.rate(task, answer, signal), 'rated', started);
  }

  async skip() {
    if (this.busy) { this.refuse('Skip'); return; }
    if (!this.current || !this.accepting()) return;
    if (this.current.amend) {  // S during an Undo: the first answer stands
      this.current.prepared.watch.stop();
      this.advance();
      return;
    }
    const { task } = this.current.prepared;
    await this.send(task, (signal) => this.api.skip(task, signal), 'skipped', this.mark('rss:skip', task));
  }

  /** Z or the Undo button: show the task answered last again, to answer anew (the service keeps its
   * finalize RSS_AMEND_S, so the new answer replaces the first); the task on screen waits in front. */
  undo() {
    const last = this.lastAnswer;
    if (!last || this.busy || Date.now() > last.until - UNDO_MARGIN_MS) return;
    this.lastAnswer = null;
    this.renderUndo();
    clearTimeout(this.expiryTimer);
    if (this.current) {
      this.current.prepared.watch.stop();
      this.front.unshift(this.current.prepared);
    }
    this.show(last.prepared, null, { amend: true, view: last.prepared.task.kind === 'pixel' ? last.view : null });
  }

  renderUndo() {
    const button = $('#undo-answer');
    const last = this.lastAnswer;
    const left = last ? last.until - UNDO_MARGIN_MS - Date.now() : 0;
    button.hidden = left <= 0;
    if (left > 0) button.firstChild.textContent = `Undo (${Math.ceil(left / 1000)} s) `;
    clearTimeout(this.undoTimer);
    if (left > 0) this.undoTimer = setTimeout(() => this.renderUndo(), Math.min(left, 1000));
    else this.lastAnswer = null;
  }

  /** A performance mark of the rater's action on ``task`` (the start of its rss:submit-to-next); its time. */
  mark(name, task) {
    return performance.mark(name, { detail: { taskId: task.task_id } }).startTime;
  }

  /**
   * One try of ``call(signal)`` while the rater sees it pending: the spinner after PENDING_MS (at once for a
   * retry), and after SLOW_MS a message with Retry. Resolves {accepted}, {error}, or {retry: true} when the
   * rater asked to send it again (this try is aborted).
   */
  attempt(call, task, counter, retrying) {
    const controller = new AbortController();
    const request = call(controller.signal);
    request.catch(() => {});  // an aborted try's rejection is no news
    const what = counter === 'skipped' ? 'skip' : 'answer';
    return new Promise((resolve) => {
      let slowMessage = null, settled = false;
      const showSpinner = () => {
        $('#pending-text').textContent = `${retrying ? 'Sending again' : 'Sending'} your ${what} to task ${task.task_id}…`;
        $('#pending').hidden = false;
      };
      const spinner = retrying ? null : setTimeout(showSpinner, PENDING_MS);
      if (retrying) showSpinner();
      const slow = setTimeout(() => {
        this.pending.slow = true;
        slowMessage = this.message(`The service has not answered for ${SLOW_MS / 1000} s: your ${what} to task ` +
          `${task.task_id} may not have arrived. Retry sends it again (so does Enter); it counts once.`, 'error',
        { label: 'Retry', run: () => this.pending && this.pending.retry() });
      }, SLOW_MS);
      const done = (outcome) => {
        if (settled) return;
        settled = true;
        clearTimeout(spinner);
        clearTimeout(slow);
        if (slowMessage) slowMessage.remove();
        $('#pending').hidden = true;
        this.pending = null;
        resolve(outcome);
      };
      this.pending = { task, slow: false, retry: () => { controller.abort(); done({ retry: true }); } };
      request.then((accepted) => done({ accepted }), (error) => done({ error }));
    });
  }

  /** A key or button that would act on the task while it cannot: said so beside the task, not dropped silently. */
  refuse(key, why = null) {
    const task = this.pending ? this.pending.task : null;
    why = why || (task ? `your answer to task ${task.task_id} is still being sent` : 'no task is shown yet');
    const note = $('#refused');
    note.textContent = `Not used: ${key === ' ' ? 'Space' : key} (${why}).`;
    note.hidden = false;
    this.refusedCount += 1;
    note.dataset.count = String(this.refusedCount);
    clearTimeout(this.refusedTimer);
    this.refusedTimer = setTimeout(() => { note.hidden = true; }, REFUSED_MS);
  }

  async send(task, call, counter, started) {
    this.busy = true;
    const { prepared, view } = this.current;
    let accepted, outcome, tries = 0;
    do {
      outcome = await this.attempt(call, task, counter, tries > 0);
      tries += 1;
    } while (outcome.retry);
    if (outcome.error) {
      const err = outcome.error;
      this.busy = false;
      if (!(err instanceof ApiError)) throw err;
      if (tries > 1 && err.status === 409 && counter !== 'amended') {
        // the lease was used: by the try the rater gave up on, which arrived after all (it counts once)
        this.message(`Task ${task.task_id}: your first try had arrived after all; the ${counter === 'rated' ? 'answer' : 'skip'} ` +
          'counts once. Here is the next task.', 'info');
        this.busy = true;
        outcome = { accepted: null };
      }
    }
    if (outcome.error) {
      const err = outcome.error;
      if (counter === 'amended' && (err.status === 409 || err.status === 404)) {
        this.message(`Undo came too late (${err.message}): your first answer to task ${task.task_id} stands.`, 'info');
        prepared.watch.stop();
        this.advance();
        return;
      }
      if ([404, 409, 410].includes(err.status)) this.held.delete(task.task_id);
      if (err.status === 410) {
        this.message(`Your lease on task ${task.task_id} expired before the answer arrived: the task went back ` +
          'to the queue and the answer was not counted. Here is the next task.', 'info');
        this.advance();
      } else if (err.status === 409 || err.status === 404) {
        this.message(`Task ${task.task_id}: ${err.message}. Here is the next task.`, 'info');
        this.advance();
      } else if (err.network) {
        this.message(`${err.message} Your answer was not sent; press ${counter === 'rated' ? 'Enter' : 'S'} to try again.`);
      } else {
        this.message(err.message);
      }
      return;
    }
    accepted = outcome.accepted;
    this.clearErrors();
    prepared.watch.stop();
    this.held.delete(task.task_id);
    if (counter !== 'amended') this.session.count(counter);
    this.lastAnswer = counter === 'rated' && accepted && accepted.amend_until
      ? { prepared, view, until: accepted.amend_until * 1000 } : null;
    this.renderUndo();
    this.advance(started);
    this.pollQueue();
  }

  // --- status, hotkeys, controls -----------------------------------------------------------
  renderStatus() {
    const s = this.session;
    $('#rater-name').textContent = s.name || '–';
    $('#rated').textContent = String(s.rated);
    $('#skipped').textContent = String(s.skipped);
    $('#rate').textContent = s.perMinute.toFixed(1);
    const q = s.queue;
    // what this rater can lease now (GET /v1/tasks/queue counts it for them), and what they skipped comes back
    $('#queue').textContent = q ? `${q.available ?? q.waiting} for you` +
      (q.skipped_later ? ` · ${q.skipped_later} later` : '') : '–';
    $('#queue').title = q ? `${q.available ?? q.waiting} you can lease now` +
      (q.skipped_later ? `, ${q.skipped_later} you skipped that come back to you later` : '') +
      `; ${q.waiting} waiting and ${q.leased} leased, for all raters` : '';
    const left = q ? (q.available ?? q.waiting) + (q.skipped_later || 0) + this.held.size : null;
    $('#progress').textContent = `${s.rated} answered · ${left === null ? '–' : left} left`;
    const current = this.current;
    const task = current && !current.amend && current.prepared.task;
    $('#lease').textContent = task ? `${Math.max(0, Math.round(this.leaseLeft(task) / 1000))} s` : '–';
    $('#timer').textContent = current && current.prepared.watch ? `${Math.floor(current.prepared.watch.seconds)} s` : '–';
  }

  toggleHelp(show = $('#help').hidden) { $('#help').hidden = !show; }

  setOpacity(value) {
    this.viewer.setOpacity(value);
    $('#opacity').value = Math.round(this.viewer.opacity * 100);
  }

  onKeyDown(event) {
    if (event.target.closest && event.target.closest('#signin-view')) return;
    if (event.key === 'Escape') { this.toggleHelp(false); return; }
    if (!this.session.signedIn) return;
    const target = event.target;
    if (target instanceof HTMLInputElement && target.type === 'range' && SLIDER_KEYS.has(event.key)) return;
    const kind = this.current ? this.current.prepared.task.kind : null;
    const entry = lookup(event, kind) || (!this.current && lookupAny(event));
    if (!entry) return;
    event.preventDefault();  // handled here, in the capture phase: a focused button or slider never sees it
    const { action } = entry;
    if (!$('#help').hidden && action !== 'help') return;  // under the help only ? and Esc do anything
    // Typed ahead (while an answer is being sent, or before a task is shown, or in a new task's guard time): a
    // key that would answer or change the task is refused where the rater sees it, never kept for a task they
    // have not seen yet. Enter retries an answer the service is slow to acknowledge.
    const actsOnTask = entry.answers || (entry.tasks && action !== 'flip');
    if (actsOnTask && this.busy) {
      if (event.repeat) return;
      if (action === 'submit' && this.pending && this.pending.slow) this.pending.retry();
      else this.refuse(event.key);
      return;
    }
    if (actsOnTask && !this.current) { if (!event.repeat) this.refuse(event.key); return; }
    if (entry.answers && (event.repeat || !this.accepting())) {  // a held key, or the task not seen yet
      if (!event.repeat && $('#help').hidden) this.refuse(event.key, 'the task had just appeared; press it again');
      return;
    }
    if (action === 'undo-answer') {
      if (!event.repeat) this.undo();
      return;
    }
    if (action === 'peek') {
      if (!event.repeat) { this.peekFrom = performance.now(); this.peekWas = this.viewer.hidden; this.viewer.setHidden(!this.peekWas); }
    } else if (action === 'help') this.toggleHelp();
    else if (action === 'submit') this.submit();
    else if (action === 'skip') this.skip();
    else if (action === 'opacity-up') this.setOpacity(this.viewer.opacity + 0.1);
    else if (action === 'opacity-down') this.setOpacity(this.viewer.opacity - 0.1);
    else if (action === 'reset-view') { this.viewer.fit(); this.viewer.schedule(); }
    else if (action === 'mask-style') this.cycleStyle();
    else if (action === 'image-dimmer' || action === 'image-brighter') {
      const slider = $('#brightness');
      slider.value = Number(slider.value) + (action === 'image-dimmer' ? -10 : 10);
      this.setImage();
    }
    else if (this.current) this.current.view.handle(action, event);
  }

  onKeyUp(event) {
    if (event.key === ' ' && this.peekFrom !== undefined) {
      if (performance.now() - this.peekFrom > TAP_MS) this.viewer.setHidden(this.peekWas);  // held: peek ends
      this.peekFrom = undefined;
    }
  }

  bind() {
    $('#signin').addEventListener('submit', (e) => {
      e.preventDefault();
      const token = $('#token').value.trim();
      if (token) this.signIn(token);
      else this.message('Enter your rater token.');
    });
    $('#signout').addEventListener('click', () => this.signOut());
    $('#help-button').addEventListener('click', () => this.toggleHelp());
    $('#help-close').addEventListener('click', () => this.toggleHelp(false));
    $('#opacity').addEventListener('input', (e) => this.viewer.setOpacity(Number(e.target.value) / 100));
    $('#brightness').addEventListener('input', () => this.setImage());
    $('#contrast').addEventListener('input', () => this.setImage());
    $('#colour').addEventListener('input', () => this.setImage());
    $('#style-button').addEventListener('click', () => this.cycleStyle());
    $('#skip-button').addEventListener('click', () => this.skip());
    $('#submit-button').addEventListener('click', () => this.submit());
    $('#undo-answer').addEventListener('click', () => this.undo());
    // a clicked button keeps no focus (Space or Enter would press it again), and the image takes it back
    document.addEventListener('click', (e) => { const b = e.target.closest && e.target.closest('button'); if (b) b.blur(); });
    $('#canvas').addEventListener('pointerdown', () => {
      if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
    });
    document.addEventListener('visibilitychange', () => {
      if (this.current && this.current.prepared.watch) this.current.prepared.watch.visible(!document.hidden);
    });
    // a closing or reloading page gives its leases back (the service would otherwise hold them RSS_LEASE_S)
    window.addEventListener('pagehide', () => {
      for (const task of this.held.values()) this.api.releaseBeacon(task);
      this.held.clear();
    });
    window.addEventListener('keydown', (e) => this.onKeyDown(e), { capture: true });
    window.addEventListener('keyup', (e) => this.onKeyUp(e));
    window.addEventListener('unhandledrejection', (e) => this.message(`Unexpected error: ${e.reason}`));
    setInterval(() => this.renderStatus(), 250);  // the task timer and lease countdown
  }
}

// No global: the browser tests and `rss bench ui` observe the page (DOM, canvas, performance entries).
new App();
