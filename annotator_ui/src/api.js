// Every request the UI makes goes through here: one place for the token, errors and timeouts.

export class ApiError extends Error {
  /** status: the HTTP status (0 for a network error); network: the service could not be reached. */
  constructor(message, { status = 0, network = false } = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.network = network;
  }
}

function describe(detail) {
  if (typeof detail === 'string') return detail;
  if (Array.isArray(detail)) {  // FastAPI's validation errors: [{loc, msg}, ...]
    return detail.map((d) => `${(d.loc || []).slice(1).join('.') || 'body'}: ${d.msg}`).join('; ');
  }
  return JSON.stringify(detail);
}

export class Api {
  constructor(base = '', token = null) {
    this.base = base;
    this.token = token;
  }

  async request(method, path, { json, query, signal, as = 'json' } = {}) {
    const url = new URL(this.base + path, window.location.origin);
    for (const [k, v] of Object.entries(query || {})) url.searchParams.set(k, v);
    const headers = {};
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (json !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(url, { method, headers, signal, body: json === undefined ? undefined : JSON.stringify(json) });
    } catch (err) {
      if (err.name === 'AbortError') throw err;
      throw new ApiError(`Network error: the reward service could not be reached (${method} ${path}: ${err.message}).`,
        { network: true });
    }
    if (!response.ok) {
      let detail = response.statusText || 'no detail';
      try {
        const body = await response.json();
        if (body && body.detail !== undefined) detail = describe(body.detail);
      } catch { /* not JSON: keep the status text */ }
      throw new ApiError(`${method} ${path} failed (${response.status}): ${detail}`, { status: response.status });
    }
    if (response.status === 204) return null;
    try {
      return as === 'blob' ? await response.blob() : await response.json();
    } catch (err) {
      throw new ApiError(`Network error while reading the answer to ${method} ${path}: ${err.message}.`, { network: true });
    }
  }

  me() { return this.request('GET', '/v1/me'); }
  // The operator page (/ui/runs), with a learner token: runs, one run's overview and its learning curve.
  runs() { return this.request('GET', '/v1/runs'); }
  overview(runId) { return this.request('GET', `/v1/runs/${encodeURIComponent(runId)}/overview`); }
  curve(runId) { return this.request('GET', `/v1/runs/${encodeURIComponent(runId)}/metrics`); }
  queue() { return this.request('GET', '/v1/tasks/queue'); }
  run(runId) { return this.request('GET', `/v1/runs/${encodeURIComponent(runId)}`); }
  image(url) { return this.request('GET', url, { as: 'blob' }); }
  /** The next leased task, or null when none came within waitS seconds. */
  nextTask(waitS, signal) { return this.request('GET', '/v1/tasks/next', { query: { wait_s: waitS }, signal }); }
  rate(task, answer, signal) {
    return this.request('POST', `/v1/tasks/${encodeURIComponent(task.task_id)}/rating`,
      { json: { lease_id: task.lease_id, ...answer }, signal });
  }
  /** Replace the answer to an answered task, once, within the service's RSS_AMEND_S (the Undo). */
  amend(task, answer, signal) {
    return this.request('PUT', `/v1/tasks/${encodeURIComponent(task.task_id)}/rating`,
      { json: { lease_id: task.lease_id, ...answer }, signal });
  }
  skip(task, signal) {
    return this.request('POST', `/v1/tasks/${encodeURIComponent(task.task_id)}/skip`,
      { json: { lease_id: task.lease_id }, signal });
  }
  /** Give a leased task back unanswered: it waits again at once, for anyone (no skip counted). */
  release(task) {
    return this.request('POST', `/v1/tasks/${encodeURIComponent(task.task_id)}/release`, { json: { lease_id: task.lease_id } });
  }
  /** The same from a closing page: a beacon outlives the page but cannot set the Authorization header, so the
   * token travels in the body (text/plain, a beacon's type), beside the lease id, to the same origin only. */
  releaseBeacon(task) {
    const url = `${this.base}/v1/tasks/${encodeURIComponent(task.task_id)}/release`;
    return navigator.sendBeacon(url, JSON.stringify({ lease_id: task.lease_id, token: this.token }));
  }
}
