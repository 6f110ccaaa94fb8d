"use strict";
// A credential kept current: one GetCredential, then WatchCredential pushes.
// Before each use the lease is checked: when it is three quarters over (the
// watch is down, or the credential cannot be watched, as dynamic_api_key
// cannot), it is fetched again; an expired lease that cannot be renewed is
// an error, never used.

const { Backoff, sleep } = require("./backoff");

class LiveCredential {
  #broker;
  #current = null;
  #refreshing = null;
  #stop = new AbortController();

  constructor(broker, name) {
    this.#broker = broker;
    this.name = name;
    /** The last error of the watch, if it stopped (for diagnostics; never a secret). */
    this.lastError = null;
  }

  /** Fetches the first lease (errors such as NOT_FOUND reach the caller), then watches. */
  async start() {
    this.#set(await this.#broker.get(this.name));
    this.#watchLoop();
    return this;
  }

  /** The latest lease held (may be near its end: use fresh()). */
  get current() {
    return this.#current;
  }

  /** A lease that is not three quarters over, fetching one if needed. */
  async fresh() {
    const c = this.#current;
    if (!needsRenewal(c)) return c;
    try {
      return await this.refresh();
    } catch (err) {
      if (Date.now() < c.expiresAt.getTime()) return c; // still leased: use it
      throw err;
    }
  }

  /** Fetches the lease now (concurrent callers share one GetCredential). */
  refresh() {
    if (!this.#refreshing) {
      this.#refreshing = this.#broker
        .get(this.name)
        .then((c) => this.#set(c))
        .finally(() => {
          this.#refreshing = null;
        });
    }
    return this.#refreshing;
  }

  close() {
    this.#stop.abort();
  }

  /** Keeps the newest lease: a slow GetCredential answer never replaces a newer push. */
  #set(c) {
    const cur = this.#current;
    if (!cur || !cur.issuedAt || !c.issuedAt || c.issuedAt >= cur.issuedAt) this.#current = c;
    return this.#current;
  }

  async #watchLoop() {
    const signal = AbortSignal.any([this.#stop.signal, this.#broker.closedSignal]);
    const backoff = new Backoff({ baseMs: 1000, maxMs: 60000 });
    while (!signal.aborted) {
      try {
        for await (const c of this.#broker.watch(this.name, { signal })) {
          backoff.reset();
          this.#set(c);
        }
        return; // the watch ends only when stopped
      } catch (err) {
        // NOT_FOUND, PERMISSION_DENIED, FAILED_PRECONDITION (a dynamic key
        // cannot be watched), ...: leases are renewed by fresh() meanwhile;
        // the config may change, so try again, slowly.
        this.lastError = err;
        await sleep(backoff.next(), signal);
      }
    }
  }
}

function needsRenewal(c) {
  if (!c.expiresAt) return false;
  const end = c.expiresAt.getTime();
  const start = c.issuedAt ? c.issuedAt.getTime() : end;
  let renewAt = start + 0.75 * (end - start);
  if (c.tokenExpiresAt) {
    // A bearer token: renew ahead of its own expiry too (at most 30 s ahead,
    // the margin twilio-node's TokenAuthStrategy keeps).
    const exp = c.tokenExpiresAt.getTime();
    renewAt = Math.min(renewAt, exp - Math.min(30000, (exp - start) / 4));
  }
  return Date.now() >= renewAt;
}

module.exports = { LiveCredential };
