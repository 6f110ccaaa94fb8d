"use strict";
// A client of the credbroker daemon: @grpc/grpc-js over its Unix socket,
// with the package's copy of proto/credbroker/v1/broker.proto.

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const { Credential, AccessToken } = require("./credential");
const { fromGrpc, isTransient, CredbrokerError } = require("./errors");
const { Backoff, sleep } = require("./backoff");

const PROTO = path.join(__dirname, "..", "proto", "credbroker", "v1", "broker.proto");
const DEFAULT_SOCKET = "/run/credbroker/broker.sock";

let services;
/** The generated service constructors, loaded once. */
function loadServices() {
  if (!services) {
    const def = protoLoader.loadSync(PROTO, {
      keepCase: false, // accountSid, apiKey, expiresAt, ...
      longs: String, // Timestamp.seconds
      enums: String,
      defaults: true,
      oneofs: true, // msg.secret names the member that is set
    });
    services = grpc.loadPackageDefinition(def).credbroker.v1;
  }
  return services;
}

/**
 * Channel options. `grpc.default_authority = localhost`: grpc-core based
 * clients (Python grpcio, Ruby, C++) and grpc-go send the percent-encoded
 * socket path as HTTP/2 `:authority`, which the daemon's h2 stack (tonic)
 * refuses with RST_STREAM PROTOCOL_ERROR. grpc-js 1.14 already sends
 * "localhost" for unix: targets; we set it anyway so that no grpc-js version
 * or option that changes this default can break the client.
 */
const CHANNEL_OPTIONS = {
  "grpc.default_authority": "localhost",
  "grpc.max_receive_message_length": 4 * 1024 * 1024,
  // The daemon is local: after it restarts, reconnect within seconds, not
  // after grpc-js's default of up to 120 s between attempts.
  "grpc.initial_reconnect_backoff_ms": 200,
  "grpc.max_reconnect_backoff_ms": 5000,
};

/** FormParam list from an object (values may be arrays), URLSearchParams, or [k, v] pairs. */
function formParams(params) {
  if (params == null) return [];
  const out = [];
  const entries =
    params instanceof URLSearchParams || Array.isArray(params) ? params : Object.entries(params);
  for (const [key, value] of entries) {
    for (const v of Array.isArray(value) ? value : [value]) {
      out.push({ key: String(key), value: v == null ? "" : String(v) });
    }
  }
  return out;
}

class Broker {
  #client;
  #admin;
  #deadlineMs;
  #closing = new AbortController();

  /**
   * @param {string} [socketPath] the daemon's socket; default
   *   $CREDBROKER_SOCKET, else /run/credbroker/broker.sock
   * @param {object} [opts] { deadlineMs: per unary call (10 s), channelOptions }
   */
  constructor(socketPath, opts = {}) {
    this.socketPath = path.resolve(socketPath || process.env.CREDBROKER_SOCKET || DEFAULT_SOCKET);
    this.#deadlineMs = opts.deadlineMs || 10000;
    const { CredentialBroker, RotationAdmin } = loadServices();
    const options = { ...CHANNEL_OPTIONS, ...(opts.channelOptions || {}) };
    const target = `unix://${this.socketPath}`;
    this.#client = new CredentialBroker(target, grpc.credentials.createInsecure(), options);
    this.#admin = new RotationAdmin(target, grpc.credentials.createInsecure(), {
      ...options,
      channelOverride: this.#client.getChannel(),
    });
  }

  #unary(client, method, request, credential) {
    return new Promise((resolve, reject) => {
      const deadline = new Date(Date.now() + this.#deadlineMs);
      client[method](request, { deadline }, (err, res) =>
        err ? reject(fromGrpc(err, method, credential)) : resolve(res),
      );
    });
  }

  /** The current lease of credential `name`. */
  async get(name) {
    return new Credential(await this.#unary(this.#client, "GetCredential", { name }, name));
  }

  /** [{ name, kind }] of the credentials this process may read. */
  async list() {
    const res = await this.#unary(this.#client, "ListCredentials", {}, null);
    return res.credentials.map(({ name, kind }) => ({ name, kind }));
  }

  /**
   * Credential `name` now and on every change, as an async iterator. A
   * stream that ends (daemon restart, UNAVAILABLE, socket gone) is opened
   * again with exponential backoff and jitter; errors that waiting will not
   * fix (NOT_FOUND, PERMISSION_DENIED, FAILED_PRECONDITION, ...) are thrown.
   * Stop with `break`, or with `signal` (an AbortSignal) to stop at once.
   * @param {object} [opts] { signal, backoff: { baseMs, maxMs }, onError(err) }
   */
  async *watch(name, opts = {}) {
    const signal = opts.signal
      ? AbortSignal.any([opts.signal, this.#closing.signal])
      : this.#closing.signal;
    const backoff = new Backoff(opts.backoff);
    while (!signal.aborted) {
      const call = this.#client.WatchCredential({ name });
      const cancel = () => call.cancel();
      signal.addEventListener("abort", cancel, { once: true });
      let error = null;
      try {
        for await (const msg of call) {
          backoff.reset();
          yield new Credential(msg);
        }
      } catch (err) {
        error = err;
      } finally {
        signal.removeEventListener("abort", cancel);
        call.cancel(); // consumer stopped (break/return): end the stream
      }
      if (signal.aborted) return;
      if (error) {
        const ours = fromGrpc(error, "WatchCredential", name);
        if (!isTransient(ours.code)) throw ours;
        if (opts.onError) opts.onError(ours);
      }
      await sleep(backoff.next(), signal);
    }
  }

  /**
   * Checks an X-Twilio-Signature with the Auth Token the broker keeps.
   * @param {object} req { credential, url, params?, body?, signature }
   * @returns {Promise<{valid: boolean, matched: "current"|"previous"|""}>}
   */
  async validateWebhook({ credential, url, params, body, signature }) {
    const res = await this.#unary(
      this.#client,
      "ValidateWebhook",
      {
        credential,
        url: String(url),
        params: formParams(params),
        body: body == null ? Buffer.alloc(0) : Buffer.from(body),
        signature: signature || "",
      },
      credential,
    );
    return { valid: res.valid, matched: res.matched };
  }

  /**
   * A Twilio Access Token signed inside the broker.
   * @param {object} req { credential, identity, ttlSeconds?, voice?, video?, chat?, sync? }
   *   (grants as in the proto, camelCase: voice: { outgoingApplicationSid, incomingAllow })
   * @returns {Promise<AccessToken>}
   */
  async mintAccessToken({ credential, identity, ttlSeconds = 0, voice, video, chat, sync }) {
    const res = await this.#unary(
      this.#client,
      "MintAccessToken",
      { credential, identity, ttlSeconds, voice, video, chat, sync },
      credential,
    );
    return new AccessToken(res);
  }

  /** RotationAdmin.Rotate (for the `[server] admin` uids): { name, step, lastError, ... }. */
  async rotate(name) {
    return this.#unary(this.#admin, "Rotate", { name }, name);
  }

  /** RotationAdmin.GetRotationStatus. */
  async rotationStatus(name) {
    return this.#unary(this.#admin, "GetRotationStatus", { name }, name);
  }

  /** RotationAdmin.GetUsage: `[usage.NAME]` `name`'s figures and alert ({ name, onSpike, categories, alert, ... }). */
  async usage(name) {
    return this.#unary(this.#admin, "GetUsage", { name }, name);
  }

  /** RotationAdmin.ClearAlert: lowers `[usage.NAME]` `name`'s alert (and a freeze of dynamic keys); the status after. */
  async clearAlert(name) {
    return this.#unary(this.#admin, "ClearAlert", { name }, name);
  }

  /** Ends every watch (and the twilioClient()s built on this broker), closes the channel. */
  close() {
    this.#closing.abort();
    this.#client.close();
  }

  /** An AbortSignal that fires on close(), for helpers built on this broker. */
  get closedSignal() {
    return this.#closing.signal;
  }
}

module.exports = { Broker, formParams, CHANNEL_OPTIONS, PROTO, CredbrokerError };
