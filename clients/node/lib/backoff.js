"use strict";
// The one backoff with jitter of the package: exponential from `baseMs`,
// capped at `maxMs`, each delay drawn uniformly from [d/2, d] so that many
// clients of one broker restarted together do not reconnect in step.

class Backoff {
  constructor({ baseMs = 200, maxMs = 30000 } = {}) {
    this.baseMs = baseMs;
    this.maxMs = maxMs;
    this.attempt = 0;
  }
  reset() {
    this.attempt = 0;
  }
  next() {
    const d = Math.min(this.maxMs, this.baseMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    return d / 2 + Math.random() * (d / 2);
  }
}

/** Resolves after `ms`, or at once when `signal` aborts (never rejects). */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal && signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      if (signal) signal.removeEventListener("abort", done);
      resolve();
    }
    if (signal) signal.addEventListener("abort", done, { once: true });
  });
}

module.exports = { Backoff, sleep };
