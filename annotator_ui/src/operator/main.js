// The operator page (/ui/runs): sign-in with a learner token, the runs, and for the chosen run its learning curve,
// queue depths, raters' throughput, agreement and seconds per answer, and its gallery, refreshed every few seconds.
// Each figure is one the service keeps (GET /v1/runs/{id}/overview); one it does not keep says "not recorded".

import { Api } from '../api.js';
import { el } from '../dom.js';
import { OVERLAY_PALETTE, classColour } from '../overlay.js';
import { Gallery } from './gallery.js';
import { Plot } from './plot.js';

const KEY = 'rss.operator';  // sessionStorage: the token, for this tab only (the rater's session is another key)
const REFRESH_MS = 3000;
const SHOWN = ['val_miou', 'val_pixel_acc', 'reward_mean'];  // the series drawn until the operator picks others
const NOT_RECORDED = 'not recorded';
const SERIES = OVERLAY_PALETTE.slice(1, 8);  // the overlay's object colours (colour-blind safe) but black, for lines

const $ = (selector) => document.querySelector(selector);
const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
});

/** Text of a figure the service may not have: ``none`` when it is null, ``why`` in its tooltip. */
function figure(node, value, format, none = NOT_RECORDED, why = '') {
  const missing = value === null || value === undefined;
  node.textContent = missing ? none : format(value);
  node.title = missing ? why : '';
  node.classList.toggle('none', missing);
}

const fixed = (digits) => (v) => v.toFixed(digits);

class OperatorApp {
  constructor() {
    this.token = sessionStorage.getItem(KEY);
    this.api = new Api('', this.token);
    this.plot = new Plot($('#curve'));
    this.gallery = new Gallery($('#gallery'), this.api);
    this.abort = new AbortController();
    this.runId = new URLSearchParams(window.location.hash.slice(1)).get('run');
    this.shown = new Set(SHOWN);
    this.curve = [];
    this.names = [];
    this.refreshes = 0;
    $('#signin').addEventListener('submit', (e) => { e.preventDefault(); this.signIn($('#token').value.trim()); });
    $('#signout').addEventListener('click', () => this.signOut());
    $('#run-select').addEventListener('change', (e) => this.choose(e.target.value));
    window.addEventListener('resize', () => this.drawCurve());
    if (this.token) this.start(); else this.showSignIn();
  }

  // --- messages: every error reaches the operator --------------------------------------------
  message(text) {
    const box = $('#messages');
    for (const m of box.children) if (m.dataset.text === text) return;
    const close = el('button', { type: 'button', className: 'close', 'aria-label': 'Dismiss' }, '×');
    const node = el('div', { className: 'message error', role: 'alert' }, el('span', {}, text), close);
    node.dataset.text = text;
    close.addEventListener('click', () => node.remove());
    box.append(node);
  }

  clearErrors() { $('#messages').replaceChildren(); }

  // --- sign-in ---------------------------------------------------------------------------------
  showSignIn() {
    $('#signin-view').hidden = false;
    $('#dashboard').hidden = true;
    document.body.dataset.state = 'signed-out';
    $('#token').focus();
  }

  async signIn(token) {
    const api = new Api('', token);
    try {
      await api.runs();
    } catch (err) {
      if (err.status === 401) this.message('Sign-in failed: the service does not know that token.');
      else if (err.status === 403) this.message('Sign-in failed: that is a rater token; this page needs a learner token.');
      else this.message(`Sign-in failed: ${err.message}`);
      return;
    }
    sessionStorage.setItem(KEY, token);
    this.token = token;
    this.api = api;
    this.gallery = new Gallery($('#gallery'), api);
    this.clearErrors();
    this.start();
  }

  signOut() {
    sessionStorage.removeItem(KEY);
    this.abort.abort();
    this.abort = new AbortController();
    this.token = null;
    this.api = new Api('', null);
    this.showSignIn();
  }

  start() {
    $('#signin-view').hidden = true;
    $('#dashboard').hidden = false;
    document.body.dataset.state = 'dashboard';
    this.loop(this.abort.signal);
  }

  async loop(signal) {
    while (!signal.aborted) {
      await this.refresh(signal);
      await sleep(REFRESH_MS, signal);
    }
  }

  choose(runId) {
    this.runId = runId;
    window.location.hash = new URLSearchParams({ run: runId }).toString();
    this.refresh(this.abort.signal);
  }

  // --- one refresh: the runs, then the chosen run's overview and curve -------------------------------------
  async refresh(signal) {
    try {
      const { runs } = await this.api.runs();
      if (signal.aborted) return;
      this.renderRuns(runs);
      if (this.runId === null) {
        this.clearErrors();
        return;
      }
      const [overview, curve] = await Promise.all([this.api.overview(this.runId), this.api.curve(this.runId)]);
      if (signal.aborted || overview.run.run_id !== this.runId) return;  // signed out, or another run chosen since
      this.curve = curve.points;
      this.renderOverview(overview);
      this.renderLegend();
      this.drawCurve();
      $('#curve-info').textContent = `${curve.points.length} evaluations (the last ${curve.max_points} kept)`;
      await this.gallery.render(this.runId, overview.gallery);
      this.renderGalleryLegend(overview);
      $('#updated').textContent = new Date().toLocaleTimeString();
      this.clearErrors();
      document.body.dataset.refreshed = String(++this.refreshes);  // a test waits for the next one
    } catch (err) {
      if (signal.aborted) return;
      if (err.status === 401 || err.status === 403) {
        this.signOut();
        this.message('Your saved token is no longer accepted; sign in with a learner token.');
        return;
      }
      this.message(`${err.message} The page tries again every ${REFRESH_MS / 1000} s.`);
    }
  }

  renderRuns(runs) {
    const select = $('#run-select');
    const ids = runs.map((r) => r.run_id);
    if (this.runId === null || !ids.includes(this.runId)) {  // the newest run, until the operator picks one
      this.runId = runs.length ? runs.reduce((a, b) => (b.created_at > a.created_at ? b : a)).run_id : null;
    }
    if (select.dataset.ids !== ids.join('\n')) {
      select.replaceChildren(...ids.map((id) => el('option', { value: id }, id)));
      select.dataset.ids = ids.join('\n');
    }
    if (this.runId !== null) select.value = this.runId;
    if (!ids.length) $('#run-info').textContent = 'no run registered yet';
  }

  renderOverview(o) {
    const { run, stats } = o;
    $('#run-info').textContent = `${run.level} level, scorer ${run.scorer}${run.scorer === 'human' ? ` (${run.task_kind} tasks)` : ''}, `
      + `${run.dataset}, ${run.num_classes} classes`;
    $('#last-step').textContent = o.last_step === null ? '–' : String(o.last_step);
    const last = this.curve.length ? this.curve[this.curve.length - 1] : null;
    figure($('#last-miou'), last && last.step === o.last_step ? last.metrics.val_miou : null, fixed(4), '–');
    $('#pending-pixels').textContent = String(o.pending_pixels);
    $('#results-unread').textContent = String(o.results_unread);
    $('#results-unacked').textContent = String(o.results_unacked);
    figure($('#median-seconds'), o.median_rater_seconds, (v) => `${v.toFixed(1)} s`, NOT_RECORDED,
      run.scorer === 'human' ? 'No answer to this kind of task has said its rater_seconds yet.' : 'Not a human run.');
    $('#jobs').textContent = `${stats.jobs_waiting} / ${stats.jobs_pending}`;
    $('#tasks').textContent = `${stats.tasks_waiting} / ${stats.leases_pending}`;
    $('#dead-letters').textContent = String(stats.dead_letters);
    $('#results-rate').textContent = `${stats.results_last_minute} / ${stats.results_per_minute_5m.toFixed(1)}`;
    $('#ratings-rate').textContent = `${o.ratings_last_minute} / ${o.ratings_per_minute_5m.toFixed(1)}`;
    figure($('#agreement'), o.agreement, (a) => `${(100 * a).toFixed(0)} % (${o.honeypots_agreed} of ${o.honeypots})`,
      NOT_RECORDED, 'No honeypot answered yet (RSS_HONEYPOT_FRACTION).');
    const seconds = (v) => (v === null || v === undefined ? '–' : v.toFixed(1));
    $('#raters tbody').replaceChildren(...Object.entries(stats.raters).map(([name, r]) => el('tr', {},
      el('td', {}, name), el('td', {}, String(r.rated)), el('td', {}, String(r.skipped)),
      el('td', {}, r.per_minute_5m.toFixed(1)),
      el('td', {}, r.agreement === null ? '–' : `${(100 * r.agreement).toFixed(0)} %`),
      el('td', {}, seconds(r.median_rater_seconds)))));
  }

  /** Every metric the curve holds, each a checkbox in its colour; SHOWN ones drawn at first. */
  renderLegend() {
    const names = [...new Set(this.curve.flatMap((p) => Object.keys(p.metrics)))];
    names.sort((a, b) => (SHOWN.includes(a) ? SHOWN.indexOf(a) : 99) - (SHOWN.includes(b) ? SHOWN.indexOf(b) : 99)
      || a.localeCompare(b));
    if (names.join(',') === this.names.join(',')) return;
    this.names = names;
    $('#curve-legend').replaceChildren(...names.map((name) => {
      const [r, g, b] = this.colour(name);
      const box = el('input', { type: 'checkbox', 'data-series': name });
      box.checked = this.shown.has(name);
      box.addEventListener('change', () => {
        if (box.checked) this.shown.add(name); else this.shown.delete(name);
        this.drawCurve();
      });
      return el('li', {}, el('label', {}, box, el('span', { className: 'swatch', style: `background: rgb(${r},${g},${b})` }),
        name));
    }));
  }

  /** A series' colour, in legend order. */
  colour(name) { return SERIES[this.names.indexOf(name) % SERIES.length]; }

  drawCurve() {
    const series = this.names.filter((n) => this.shown.has(n)).map((name) => ({ name, colour: this.colour(name) }));
    this.plot.draw(this.curve, series);
  }

  renderGalleryLegend(o) {
    $('#gallery-info').textContent = o.gallery
      ? `step ${o.gallery.step}: the policy's argmax and one mask sampled from it, on the first training images`
      : '';
    $('#gallery-legend').replaceChildren(...o.run.class_names.map((name, i) => {
      if (i === 0) return null;  // background is left clear
      const [r, g, b] = classColour(i);
      return el('li', {}, el('label', {}, el('span', { className: 'swatch', style: `background: rgb(${r},${g},${b})` }), name));
    }).filter(Boolean));
  }
}

new OperatorApp();
