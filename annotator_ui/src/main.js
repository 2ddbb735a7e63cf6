// The annotator: sign-in, the task loop (lease, prefetch, show, answer), status, hotkeys, messages.

import { Api, ApiError } from './api.js';
import { Viewer, maskBitmap, maskRect } from './canvas.js';
import { el } from './dom.js';
import { lookup, renderHelp } from './keys.js';
import { base64ToBytes, decodeIndexPng } from './png.js';
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
    renderHelp($('#help-table'));
    this.bind();
    this.session.addEventListener('change', () => this.renderStatus());
    this.renderStatus();
    if (this.session.signedIn) this.resume();
    else this.showSignIn();
  }

  // --- messages: every error reaches the rater -------------------------------------------
  message(text, kind = 'error') {
    const box = $('#messages');
    for (const m of box.children) if (m.dataset.text === text) m.remove();
    const close = el('button', { type: 'button', className: 'close', 'aria-label': 'Dismiss' }, '×');
    const node = el('div', { className: `message ${kind}`, role: kind === 'error' ? 'alert' : 'status' },
      el('span', {}, text), close);
    node.dataset.text = text;
    close.addEventListener('click', () => node.remove());
    box.append(node);
    if (kind === 'info') setTimeout(() => node.remove(), 15000);
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
      return { ...mask, bitmap: await maskBitmap(mask, task.palette) };
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
      const pending = this.next || this.fetchPrepared(signal);
      this.next = null;
      if (!this.current) this.showWaiting(true);
      const prepared = await pending;
      if (!prepared || signal.aborted) return;
      const margin = Math.min(LEASE_MARGIN_MS, prepared.task.leaseMs / 4);
      if (this.leaseLeft(prepared.task) > margin) {
        this.show(prepared, submittedAt);
        break;
      }
      // held too long while the rater worked on the previous one: the service takes it back
    }
    this.next = this.fetchPrepared(signal);
  }

  showWaiting(waiting) {
    $('#waiting').hidden = !waiting;
    if (waiting) {
      this.viewer.clear();
      $('#panel').replaceChildren(el('p', { className: 'hint' }, 'Waiting for a task…'));
      $('#task-info').textContent = '';
    }
  }

  show(prepared, submittedAt) {
    const { task } = prepared;
    this.viewer.tool = null;
    const view = new VIEWS[task.kind]({ prepared, viewer: this.viewer, submit: () => this.submit() });
    this.current = { prepared, view };
    this.showWaiting(false);
    view.mount($('#panel'));  // draws the scene synchronously
    this.renderLegend(task);
    $('#task-info').textContent = `${task.kind} task ${task.task_id} · image ${task.image_id} · run ${task.run_id}` +
      ` · ratings ${task.ratings_done}/${task.ratings_needed}`;
    document.body.dataset.state = 'task';
    document.body.dataset.taskId = task.task_id;
    document.body.dataset.kind = task.kind;
    this.expiryTimer = setTimeout(() => this.onLeaseExpired(task), Math.max(0, this.leaseLeft(task)));
    requestAnimationFrame(() => {  // the first frame with the task drawn
      const shown = performance.mark('rss:task-shown', { detail: { taskId: task.task_id } });
      if (submittedAt === null) return;
      performance.measure('rss:submit-to-next', {
        start: submittedAt, end: shown.startTime,
        detail: { taskId: task.task_id, prefetched: prepared.readyAt <= submittedAt },
      });
    });
    this.renderStatus();
  }

  renderLegend(task) {
    $('#legend').replaceChildren(...task.class_names.map((name, i) => {
      const [r, g, b] = task.palette[i] || [0, 0, 0];
      return el('li', {}, el('span', { className: 'swatch', style: `background: rgb(${r},${g},${b})` }), name);
    }));
  }

  onLeaseExpired(task) {
    if (!this.current || this.current.prepared.task !== task || this.busy) return;
    this.message(`Your lease on task ${task.task_id} expired: it went back to the queue for another rater. ` +
      'Here is the next task.', 'info');
    this.advance();
  }

  async submit() {
    if (!this.current || this.busy) return;
    const { prepared, view } = this.current;
    const started = this.mark('rss:answer', prepared.task);
    let answer;
    try {
      answer = await view.answer();
    } catch (err) {
      this.message(err.message);
      return;
    }
    await this.send(prepared.task, () => this.api.rate(prepared.task, answer), 'rated', started);
  }

  async skip() {
    if (!this.current || this.busy) return;
    const { task } = this.current.prepared;
    await this.send(task, () => this.api.skip(task), 'skipped', this.mark('rss:skip', task));
  }

  /** A performance mark of the rater's action on ``task`` (the start of its rss:submit-to-next); its time. */
  mark(name, task) {
    return performance.mark(name, { detail: { taskId: task.task_id } }).startTime;
  }

  async send(task, call, counter, started) {
    this.busy = true;
    try {
      await call();
    } catch (err) {
      this.busy = false;
      if (!(err instanceof ApiError)) throw err;
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
    this.clearErrors();
    this.session.count(counter);
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
    $('#queue').textContent = s.queue ? `${s.queue.waiting} waiting, ${s.queue.leased} leased` : '–';
    const task = this.current && this.current.prepared.task;
    $('#lease').textContent = task ? `${Math.max(0, Math.round(this.leaseLeft(task) / 1000))} s` : '–';
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
    const kind = this.current ? this.current.prepared.task.kind : null;
    const entry = lookup(event, kind);
    if (!entry) return;
    event.preventDefault();
    const { action } = entry;
    if (action === 'peek') {
      if (!event.repeat) { this.peekFrom = performance.now(); this.peekWas = this.viewer.hidden; this.viewer.setHidden(!this.peekWas); }
    } else if (action === 'help') this.toggleHelp();
    else if (action === 'submit') this.submit();
    else if (action === 'skip') this.skip();
    else if (action === 'opacity-up') this.setOpacity(this.viewer.opacity + 0.1);
    else if (action === 'opacity-down') this.setOpacity(this.viewer.opacity - 0.1);
    else if (action === 'reset-view') { this.viewer.fit(); this.viewer.schedule(); }
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
    $('#skip-button').addEventListener('click', () => this.skip());
    $('#submit-button').addEventListener('click', () => this.submit());
    window.addEventListener('keydown', (e) => this.onKeyDown(e));
    window.addEventListener('keyup', (e) => this.onKeyUp(e));
    window.addEventListener('unhandledrejection', (e) => this.message(`Unexpected error: ${e.reason}`));
    setInterval(() => this.renderStatus(), 1000);
  }
}

// No global: the browser tests and `rss bench ui` observe the page (DOM, canvas, performance entries).
new App();
