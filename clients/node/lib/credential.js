"use strict";
// Credentials as the broker leases them. Secret values sit in private
// fields: util.inspect, console.log and JSON.stringify show `<redacted>`,
// and only exposeSecret() / basicAuth() hand them out. (JavaScript strings
// cannot be wiped; keep the objects short-lived and copies few.)

const { inspect } = require("node:util");

const REDACTED = "<redacted>";

/** google.protobuf.Timestamp (seconds as a string, see broker.js) → Date, or null. */
function toDate(ts) {
  if (!ts) return null;
  return new Date(Number(ts.seconds) * 1000 + Math.floor((ts.nanos || 0) / 1e6));
}

/** The wire oneof `secret` → { type, sid?, value, tokenExpiresAt? }. */
function secretOf(msg) {
  switch (msg.secret) {
    case "authToken":
      return { type: "auth_token", value: msg.authToken.token };
    case "apiKey":
      return { type: "api_key", sid: msg.apiKey.sid, value: msg.apiKey.secret };
    case "bearer":
      return {
        type: "bearer",
        value: msg.bearer.accessToken,
        tokenExpiresAt: toDate(msg.bearer.expiresAt),
      };
    default:
      return { type: null, value: "" };
  }
}

/** HTTP Basic credentials for Twilio's REST API: Account SID or API Key SID + secret. */
function basicAuthOf(type, accountSid, sid, value) {
  if (type === "auth_token") return { username: accountSid, password: value };
  if (type === "api_key") return { username: sid, password: value };
  throw new TypeError(`a ${type} credential has no HTTP Basic form`);
}

/** The value a rotation is replacing, served during its grace window. */
class PreviousCredential {
  #value;
  constructor(msg) {
    const s = secretOf(msg);
    this.#value = s.value;
    /** "auth_token" | "api_key" */
    this.type = s.type;
    /** The API Key SID (not a secret), for api_key. */
    this.apiKeySid = s.sid || null;
    this.version = msg.version;
    /** When the old value stops working at Twilio. */
    this.retireAt = toDate(msg.retireAt);
  }
  /** The old Auth Token or API Key Secret. */
  exposeSecret() {
    return this.#value;
  }
  basicAuth(accountSid) {
    return basicAuthOf(this.type, accountSid, this.apiKeySid, this.#value);
  }
  toJSON() {
    return {
      type: this.type,
      apiKeySid: this.apiKeySid,
      secret: REDACTED,
      version: this.version,
      retireAt: this.retireAt,
    };
  }
  [inspect.custom](depth, options, inspectFn = inspect) {
    return `PreviousCredential ${inspectFn(this.toJSON(), options)}`;
  }
}

/** One lease of a credential (GetCredential / WatchCredential). */
class Credential {
  #value;
  constructor(msg) {
    const s = secretOf(msg);
    this.#value = s.value;
    this.name = msg.name;
    this.accountSid = msg.accountSid;
    /** "auth_token" | "api_key" | "bearer" (kind oauth_client). */
    this.type = s.type;
    /** The API Key SID (not a secret), for api_key. */
    this.apiKeySid = s.sid || null;
    /** For a bearer token: the token's own expiry. */
    this.tokenExpiresAt = s.tokenExpiresAt || null;
    this.version = msg.version;
    this.issuedAt = toDate(msg.issuedAt);
    /** Lease end: refetch, or rely on watch, before this. */
    this.expiresAt = toDate(msg.expiresAt);
    this.stale = Boolean(msg.stale);
    this.staleSince = toDate(msg.staleSince);
    /** Set during a rotation's grace window. */
    this.previous = msg.previous && msg.previous.secret ? new PreviousCredential(msg.previous) : null;
  }
  /** The Auth Token, API Key Secret, or bearer access token. */
  exposeSecret() {
    return this.#value;
  }
  /** { username, password } for Twilio's REST API (auth_token and api_key). */
  basicAuth() {
    return basicAuthOf(this.type, this.accountSid, this.apiKeySid, this.#value);
  }
  toJSON() {
    return {
      name: this.name,
      accountSid: this.accountSid,
      type: this.type,
      apiKeySid: this.apiKeySid,
      secret: REDACTED,
      tokenExpiresAt: this.tokenExpiresAt,
      version: this.version,
      issuedAt: this.issuedAt,
      expiresAt: this.expiresAt,
      stale: this.stale,
      staleSince: this.staleSince,
      previous: this.previous ? this.previous.toJSON() : null,
    };
  }
  [inspect.custom](depth, options, inspectFn = inspect) {
    return `Credential ${inspectFn(this.toJSON(), options)}`;
  }
}

/** A Twilio Access Token minted by the broker (MintAccessToken). */
class AccessToken {
  #jwt;
  constructor(msg) {
    this.#jwt = msg.token;
    this.expiresAt = toDate(msg.expiresAt);
  }
  /** The JWT, to hand to the Twilio client SDK that needs it. */
  toJwt() {
    return this.#jwt;
  }
  toJSON() {
    return { token: REDACTED, expiresAt: this.expiresAt };
  }
  [inspect.custom](depth, options, inspectFn = inspect) {
    return `AccessToken ${inspectFn(this.toJSON(), options)}`;
  }
}

module.exports = { Credential, PreviousCredential, AccessToken, toDate, REDACTED };
