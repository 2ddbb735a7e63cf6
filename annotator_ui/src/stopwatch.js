// Time on task: runs while the task is on screen, from its first draw, and pauses while the tab is hidden
// (the App calls visible() on visibilitychange). What an answer sends as rater_seconds.

export class Stopwatch {
  constructor() {
    this.total = 0;  // ms counted so far
    this.since = null;  // performance.now() of the last start, while counting
    this.running = false;
  }

  /** Count from ``at`` (a performance.now() time; by default now), unless the tab is hidden. */
  start(at = performance.now()) {
    this.running = true;
    if (this.since === null && !document.hidden) this.since = at;
  }

  stop() {
    this.pause();
    this.running = false;
  }

  pause() {
    if (this.since !== null) this.total += performance.now() - this.since;
    this.since = null;
  }

  /** The tab was shown or hidden. */
  visible(shown) {
    if (!shown) this.pause();
    else if (this.running && this.since === null) this.since = performance.now();
  }

  get seconds() { return (this.total + (this.since === null ? 0 : performance.now() - this.since)) / 1000; }
}
