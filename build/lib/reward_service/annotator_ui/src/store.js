// The session: token and rater name (sessionStorage, so a reload keeps them and closing the
// tab forgets them), session counters, queue depth. Views subscribe to 'change'.

const KEY = 'rss.session';

export class Session extends EventTarget {
  constructor(storage = window.sessionStorage) {
    super();
    this.storage = storage;
    const saved = JSON.parse(storage.getItem(KEY) || 'null') || {};
    this.token = saved.token || null;
    this.name = saved.name || null;
    this.rated = saved.rated || 0;
    this.skipped = saved.skipped || 0;
    this.startedAt = saved.startedAt || Date.now();
    this.queue = null;  // {waiting, leased} from the service
  }

  get signedIn() { return Boolean(this.token && this.name); }

  /** Answers per minute since the session started (the first minute counts as a whole one). */
  get perMinute() { return this.rated / Math.max(1, (Date.now() - this.startedAt) / 60000); }

  signIn(token, name) {
    Object.assign(this, { token, name, rated: 0, skipped: 0, startedAt: Date.now() });
    this.save();
  }

  signOut() {
    this.storage.removeItem(KEY);
    Object.assign(this, { token: null, name: null, rated: 0, skipped: 0, queue: null });
    this.emit();
  }

  count(what) {
    this[what] += 1;
    this.save();
  }

  setQueue(queue) {
    this.queue = queue;
    this.emit();
  }

  save() {
    const { token, name, rated, skipped, startedAt } = this;
    this.storage.setItem(KEY, JSON.stringify({ token, name, rated, skipped, startedAt }));
    this.emit();
  }

  emit() { this.dispatchEvent(new Event('change')); }
}
