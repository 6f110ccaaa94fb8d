"use strict";
// twilio-node clients that always use the broker's current credential.
//
// The hook: a subclass of twilio-node's `Twilio` that overrides `request()`
// (lib/base/BaseTwilio.js). Every SDK call (Version → Domain → Page) goes
// through it, after the SDK has built method, URL, params and body; the
// override only chooses the credential and hands the request back to
// BaseTwilio.request, which adds headers and calls the httpClient as usual.
// So `opts.httpClient` (a RequestClient subclass, e.g. one that rewrites
// hosts) and every other option keep working.
//
// - auth_token / api_key: HTTP Basic from the current lease, passed per
//   request (the client never holds the password, so inspecting it shows no
//   secret). If Twilio answers 401 code 20003 the request is retried once
//   with the other value: `previous` during a rotation's grace window, else
//   a freshly fetched lease if it differs (a watch push not yet arrived). A
//   401 means Twilio did not carry the request out, so resending is safe.
// - oauth_client (a bearer token): twilio-node's own hook,
//   ClientCredentialProvider with a TokenManager whose fetchToken() returns
//   the broker's current token; TokenAuthStrategy puts it in the
//   Authorization header.

const { inspect } = require("node:util");
const twilio = require("twilio");
const { LiveCredential } = require("./live");
const { CredbrokerError } = require("./errors");

// The OAuth app's client id and secret stay inside the broker (only the
// bearer token is served), but ClientCredentialProviderBuilder wants both.
// They are used only by twilio-node's own ApiTokenManager, which our
// TokenManager replaces, so these placeholders are never sent anywhere.
const CLIENT_ID_PLACEHOLDER = "held-by-credbroker";
const CLIENT_SECRET_PLACEHOLDER = "held-by-credbroker";

/**
 * twilio-node's TokenManager interface (lib/http/bearer_token/TokenManager):
 * `fetchToken(): Promise<string>`. Called for every request, since
 * ClientCredentialProvider.toAuthStrategy() makes a new TokenAuthStrategy
 * each time; it answers from the watched lease, asking the broker only when
 * the lease or the token is near its end.
 */
class BrokerTokenManager {
  #live;
  constructor(live) {
    this.#live = live;
  }
  async fetchToken() {
    const c = await this.#live.fresh();
    if (c.type !== "bearer") {
      throw new CredbrokerError(`credential "${c.name}" is a ${c.type}, not a bearer token`, {
        credential: c.name,
      });
    }
    return c.exposeSecret();
  }
}

function isAuthenticate401(res) {
  if (!res || res.statusCode !== 401) return false;
  let body = res.body;
  if (typeof body === "string") {
    try {
      body = JSON.parse(body);
    } catch {
      return false;
    }
  }
  return Boolean(body) && body.code === 20003;
}

/**
 * An axios error carries the request config (Authorization header, `auth`)
 * and the Node request, whose `_header` holds the Basic or Bearer value:
 * util.inspect(err) would print a secret. Redact what carries it.
 */
function redactTransportError(err) {
  if (err && typeof err === "object") {
    const cfg = err.config;
    if (cfg && cfg.headers) {
      for (const h of Object.keys(cfg.headers)) {
        if (h.toLowerCase() === "authorization") cfg.headers[h] = "<redacted>";
      }
    }
    if (cfg && cfg.auth) cfg.auth = "<redacted>";
    for (const k of ["request", "response"]) {
      if (err[k] !== undefined) Object.defineProperty(err, k, { value: undefined, enumerable: false });
    }
  }
  return err;
}

class BrokeredTwilio extends twilio.Twilio {
  #live;

  constructor(live, opts) {
    const c = live.current;
    // accountSid in opts: the Account SID, whatever the username is.
    super(c.accountSid, undefined, { ...opts, accountSid: c.accountSid });
    this.#live = live;
    this.password = undefined; // never held here (nor read from TWILIO_AUTH_TOKEN)
    if (c.type === "bearer") {
      const provider = new twilio.ClientCredentialProviderBuilder()
        .setClientId(CLIENT_ID_PLACEHOLDER)
        .setClientSecret(CLIENT_SECRET_PLACEHOLDER)
        .setTokenManager(new BrokerTokenManager(live))
        .build();
      this.setCredentialProvider(provider); // clears accountSid and Basic auth
      this.setAccountSid(c.accountSid);
    } else {
      this.username = c.basicAuth().username;
    }
  }

  /** The broker credential this client uses. */
  get credentialName() {
    return this.#live.name;
  }

  request(opts) {
    opts = opts || {};
    // An explicit credential in a direct client.request() call is the caller's.
    if (opts.username || opts.password || opts.authStrategy) return super.request(opts);
    return this.#brokered(opts);
  }

  async #brokered(opts) {
    const c = await this.#live.fresh();
    if (c.type === "bearer") {
      const res = await this.#send(opts);
      if (!isAuthenticate401(res)) return res;
      const again = await this.#live.refresh().catch(() => null);
      return again && again.exposeSecret() !== c.exposeSecret() ? this.#send(opts) : res;
    }
    const first = c.basicAuth();
    this.username = first.username;
    const res = await this.#send({ ...opts, ...first });
    if (!isAuthenticate401(res)) return res;
    let other = c.previous ? c.previous.basicAuth(c.accountSid) : null;
    if (!other) {
      const again = await this.#live.refresh().catch(() => null);
      if (again && again.type === c.type && again.exposeSecret() !== c.exposeSecret()) {
        other = again.basicAuth();
      }
    }
    return other ? this.#send({ ...opts, ...other }) : res;
  }

  async #send(opts) {
    try {
      return await super.request(opts);
    } catch (err) {
      throw redactTransportError(err);
    }
  }

  toJSON() {
    return { credential: this.#live.name, accountSid: this.accountSid };
  }

  // The SDK's own fields (the httpClient's lastRequest holds the last
  // Authorization value) are not printed.
  [inspect.custom]() {
    return `Twilio <credbroker credential "${this.#live.name}", account ${this.accountSid}>`;
  }
}

/**
 * A twilio-node `Twilio` client that uses credential `name` of `broker`,
 * following every rotation with no restart.
 * @param {Broker} broker
 * @param {string} name
 * @param {object} [opts] twilio-node client options (httpClient, region, edge, ...)
 * @returns {Promise<twilio.Twilio>} once the first lease is in; its watch ends with broker.close()
 */
async function twilioClient(broker, name, opts = {}) {
  const live = await new LiveCredential(broker, name).start();
  const c = live.current;
  if (!["auth_token", "api_key", "bearer"].includes(c.type)) {
    live.close();
    throw new CredbrokerError(`credential "${name}" has no secret the Twilio client can use`, {
      credential: name,
    });
  }
  return new BrokeredTwilio(live, opts);
}

module.exports = { twilioClient, BrokeredTwilio, BrokerTokenManager, redactTransportError };
