"use strict";
// Broker against the real daemon on a file store: get, list, watch (with a
// daemon restart in the middle), errors, webhook validation checked against
// twilio-node's own validateRequest / validateRequestWithBody, Access
// Tokens, and no secret in util.inspect / JSON / error messages.

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const path = require("node:path");
const { inspect } = require("node:util");
const grpc = require("@grpc/grpc-js");
const twilio = require("twilio");
const credbroker = require("..");
const { Broker, WebhookValidator, NotFoundError, PermissionDeniedError, UnavailableError } =
  credbroker;
const { CHANNEL_OPTIONS } = require("../lib/broker");
const h = require("./support/harness");

const AC = h.sid("AC");
const SK = h.sid("SK");
let token1, token2, keySecret;
let dir, daemon, broker;

function documents(token) {
  return {
    "twilio/webhooks": { account_sid: AC, auth_token: token },
    "twilio/messaging": { account_sid: AC, api_key_sid: SK, api_key_secret: keySecret },
    "twilio/denied": { account_sid: AC, auth_token: token },
  };
}
const CONFIG_TAIL = `
[credentials.webhooks]
store = "local"
path = "twilio/webhooks"

[credentials.messaging]
store = "local"
path = "twilio/messaging"
kind = "api_key"
[credentials.messaging.access_tokens]
max_ttl = "1h"
grants = ["voice", "video"]
identity_prefix = "user-"

[credentials.denied]
store = "local"
path = "twilio/denied"
allow = { uids = [4242] }
`;

const allSecrets = () => [token1, token2, keySecret];
const showsNoSecret = (value, what) => {
  h.assertNoSecret(inspect(value, { depth: 10, showHidden: true }), allSecrets(), `${what} (inspect)`);
  h.assertNoSecret(JSON.stringify(value) ?? "", allSecrets(), `${what} (JSON)`);
  h.assertNoSecret(String(value), allSecrets(), `${what} (String)`);
};

before(async () => {
  token1 = h.newToken();
  token2 = h.newToken();
  keySecret = h.newKeySecret();
  dir = h.tmpDir("broker");
  h.writeJsonAtomic(path.join(dir, "secrets.json"), documents(token1));
  daemon = await h.startDaemon(dir, h.configHead(dir, null) + CONFIG_TAIL);
  broker = new Broker(daemon.socket);
});
after(async () => {
  if (broker) broker.close();
  if (daemon) await daemon.stop();
});

describe("get and list", () => {
  it("list: names and kinds this process may read", async () => {
    const list = await broker.list();
    const byName = Object.fromEntries(list.map((c) => [c.name, c.kind]));
    assert.equal(byName.webhooks, "auth_token");
    assert.equal(byName.messaging, "api_key");
    assert.equal(byName.denied, undefined, "a credential whose allow list lacks us is not listed");
  });

  it("get (auth_token): account, version, lease, secret behind exposeSecret()", async () => {
    const c = await broker.get("webhooks");
    assert.ok(c instanceof credbroker.Credential);
    assert.equal(c.name, "webhooks");
    assert.equal(c.accountSid, AC);
    assert.equal(c.type, "auth_token");
    assert.match(c.version, /^[0-9a-f]{16}$/);
    assert.ok(c.expiresAt > new Date() && c.issuedAt <= c.expiresAt);
    assert.equal(c.stale, false);
    assert.equal(c.previous, null);
    assert.ok(c.exposeSecret() === token1, "exposeSecret() is the stored Auth Token");
    const basic = c.basicAuth();
    assert.ok(basic.username === AC && basic.password === token1, "basicAuth() is AC + token");
  });

  it("get (api_key): key SID shown, secret hidden", async () => {
    const c = await broker.get("messaging");
    assert.equal(c.type, "api_key");
    assert.equal(c.apiKeySid, SK);
    assert.ok(c.exposeSecret() === keySecret, "exposeSecret() is the key secret");
    assert.ok(c.basicAuth().username === SK, "Basic username is the key SID");
    assert.match(inspect(c), /apiKeySid: 'SK[0-9a-f]{32}'/);
    assert.match(inspect(c), /secret: '<redacted>'/);
  });

  it("no secret in util.inspect, console.log's format, JSON.stringify or String()", async () => {
    for (const name of ["webhooks", "messaging"]) {
      const c = await broker.get(name);
      showsNoSecret(c, name);
      showsNoSecret({ nested: [c] }, `${name} nested`);
      h.assertNoSecret(require("node:util").format("%o %O %j", c, c, c), allSecrets(), "format");
    }
  });
});

describe("errors name the credential, never a secret", () => {
  it("unknown name: NotFoundError", async () => {
    const err = await broker.get("no-such-credential").catch((e) => e);
    assert.ok(err instanceof NotFoundError && err instanceof credbroker.CredbrokerError);
    assert.equal(err.code, "NOT_FOUND");
    assert.equal(err.credential, "no-such-credential");
    assert.match(err.message, /"no-such-credential"/);
    showsNoSecret(err, "NotFoundError");
  });

  it("an unknown [usage] table: NotFoundError from GetUsage and ClearAlert", async () => {
    for (const call of [() => broker.usage("no-such-table"), () => broker.clearAlert("no-such-table")]) {
      const err = await call().catch((e) => e);
      assert.ok(err instanceof NotFoundError, inspect(err));
      assert.match(err.message, /no \[usage\.no-such-table\] table/);
    }
  });

  it("not on the allow list: PermissionDeniedError", async () => {
    const err = await broker.get("denied").catch((e) => e);
    assert.ok(err instanceof PermissionDeniedError, inspect(err));
    assert.match(err.message, /"denied".*PERMISSION_DENIED/);
    showsNoSecret(err, "PermissionDeniedError");
  });

  it("no daemon on the socket: UnavailableError", async () => {
    const nobody = new Broker(path.join(dir, "nobody.sock"), { deadlineMs: 2000 });
    const err = await nobody.get("webhooks").catch((e) => e);
    nobody.close();
    assert.ok(err instanceof UnavailableError, inspect(err));
    assert.match(err.message, /"webhooks".*UNAVAILABLE/);
  });

  it("Access Token refused by policy: the reason, no secret", async () => {
    const err = await broker
      .mintAccessToken({ credential: "messaging", identity: "admin-1" })
      .catch((e) => e);
    assert.ok(err instanceof PermissionDeniedError, inspect(err));
    assert.match(err.message, /"messaging"/);
    showsNoSecret(err, "mint error");
  });
});

describe("grpc.default_authority", () => {
  it("the channel sets :authority to localhost", () => {
    assert.equal(CHANNEL_OPTIONS["grpc.default_authority"], "localhost");
  });

  it("grpc-js 1.14.7 without the option also works (it sends localhost for unix: targets)", async () => {
    const { CredentialBroker } = grpc.loadPackageDefinition(
      require("@grpc/proto-loader").loadSync(require("../lib/broker").PROTO, { oneofs: true }),
    ).credbroker.v1;
    const raw = new CredentialBroker(`unix://${daemon.socket}`, grpc.credentials.createInsecure());
    const res = await new Promise((resolve, reject) =>
      raw.ListCredentials({}, (err, r) => (err ? reject(err) : resolve(r))),
    );
    raw.close();
    assert.ok(res.credentials.length >= 2);
  });
});

describe("watch", () => {
  it("first message at once; a change to the store is pushed; break ends the stream", async () => {
    const it = broker.watch("webhooks")[Symbol.asyncIterator]();
    const first = (await it.next()).value;
    assert.ok(first.exposeSecret() === token1, "first message: the current token");
    h.writeJsonAtomic(path.join(dir, "secrets.json"), documents(token2));
    let next;
    do next = (await it.next()).value;
    while (next.version === first.version);
    assert.ok(next.exposeSecret() === token2, "pushed: the new token");
    showsNoSecret(next, "pushed credential");
    await it.return();
  });

  it("reconnects with backoff across a daemon restart", async () => {
    const errors = [];
    const it = broker
      .watch("webhooks", { onError: (e) => errors.push(e), backoff: { baseMs: 100, maxMs: 1000 } })
      [Symbol.asyncIterator]();
    const before = (await it.next()).value;
    await daemon.stop();
    h.writeJsonAtomic(path.join(dir, "secrets.json"), documents(token1));
    daemon = await h.startDaemon(dir, h.configHead(dir, null) + CONFIG_TAIL, { logName: "daemon2.log" });
    let after;
    do after = (await it.next()).value;
    while (after.version === before.version);
    assert.ok(after.exposeSecret() === token1, "after the restart: the file's token");
    assert.ok(errors.length >= 1 && errors.every((e) => e instanceof UnavailableError), inspect(errors));
    errors.forEach((e) => showsNoSecret(e, "watch error"));
    await it.return();
  });

  it("an AbortSignal stops a watch waiting for its next message", async () => {
    const ac = new AbortController();
    const seen = [];
    const done = (async () => {
      for await (const c of broker.watch("webhooks", { signal: ac.signal })) seen.push(c.version);
    })();
    await h.waitFor(() => seen.length >= 1, 5000, "the first message");
    ac.abort();
    await done;
  });

  it("an unknown name ends the watch with NotFoundError", async () => {
    const err = await (async () => {
      for await (const _ of broker.watch("no-such-credential")); // eslint-disable-line no-unused-vars
    })().catch((e) => e);
    assert.ok(err instanceof NotFoundError, inspect(err));
  });
});

describe("webhook validation in the broker, checked against twilio-node's validateRequest", () => {
  const sign = (token, url, params) => twilio.getExpectedTwilioSignature(token, url, params);
  const URL1 = "https://app.example.com/twilio/sms?tenant=7";
  const PARAMS = { From: "+15005550006", To: "+15005550001", Body: "héllo wörld & co", MediaUrl: ["b", "a"] };
  const cases = () => {
    const token = token1; // the daemon restarted on token1
    const good = sign(token, URL1, PARAMS);
    const withPort = sign(token, "https://app.example.com:443/twilio/sms?tenant=7", PARAMS);
    return [
      ["valid", good, URL1, PARAMS],
      ["signed with the default port, URL without", withPort, URL1, PARAMS],
      ["tampered parameter", good, URL1, { ...PARAMS, Body: "hello world" }],
      ["extra parameter", good, URL1, { ...PARAMS, Extra: "1" }],
      ["tampered URL", good, "https://app.example.com/twilio/sms?tenant=8", PARAMS],
      ["tampered signature", good.slice(0, -2) + (good.endsWith("A=") ? "B=" : "A="), URL1, PARAMS],
      ["signed with another token", sign(token2, URL1, PARAMS), URL1, PARAMS],
      ["no parameters", sign(token, URL1, {}), URL1, {}],
      ["empty signature", "", URL1, PARAMS],
    ];
  };

  it("validateRequest agrees with twilio.validateRequest, valid and tampered", async () => {
    const v = new WebhookValidator(broker, "webhooks");
    for (const [what, sig, url, params] of cases()) {
      const want = twilio.validateRequest(token1, sig, url, params);
      const got = await v.validateRequest(sig, url, params);
      assert.equal(got, want, `${what}: broker ${got}, twilio-node ${want}`);
    }
    assert.equal(await v.validateRequest(cases()[0][1], URL1, PARAMS), true, "the valid case is valid");
  });

  it("accepts what twilio-node accepts on URLs it rewrites (host case, empty path, spaces, non-ASCII, query encoding)", async () => {
    const v = new WebhookValidator(broker, "webhooks");
    const urls = [
      "https://app.example.com",
      "https://App.Example.COM/hook",
      "https://app.example.com:8443/hook?x=1",
      "https://app.example.com/hook?q=a b&r=c+d&s=e%20f",
      "https://app.example.com/hööks",
    ];
    const params = { Body: "hi", Digits: ["2", "1"] };
    for (const url of urls) {
      const normalized = new URL(url).toString();
      for (const signed of new Set([url, normalized])) {
        const sig = sign(token1, signed, params);
        const want = twilio.validateRequest(token1, sig, url, params);
        const got = await v.validateRequest(sig, url, params);
        assert.ok(!want || got, `${url} signed as ${signed}: twilio-node accepts, the broker refused`);
        // The URL exactly as given is accepted too, as twilio-python does.
        if (signed === url) assert.equal(got, true, `${url} signed as given`);
        const forged = sign(token2, signed, params);
        assert.equal(await v.validateRequest(forged, url, params), false, `${url}: another token`);
        assert.equal(twilio.validateRequest(token1, forged, url, params), false);
      }
    }
  });

  it("validateRequestWithBody agrees with twilio.validateRequestWithBody", async () => {
    const v = new WebhookValidator(broker, "webhooks");
    const body = JSON.stringify({ event: "message.delivered", sid: h.sid("SM") });
    const hash = crypto.createHash("sha256").update(body).digest("hex");
    const url = `https://app.example.com/twilio/events?bodySHA256=${hash}`;
    const sig = sign(token1, url, {});
    const rows = [
      ["valid", sig, url, body],
      ["tampered body", sig, url, body.replace("delivered", "failed")],
      ["tampered signature", sign(token2, url, {}), url, body],
      ["hash of another body", sign(token1, url.replace(hash, "0".repeat(64)), {}), url.replace(hash, "0".repeat(64)), body],
    ];
    for (const [what, s, u, b] of rows) {
      const want = twilio.validateRequestWithBody(token1, s, u, b);
      const got = await v.validateRequestWithBody(s, u, b);
      assert.equal(got, want, `${what}: broker ${got}, twilio-node ${want}`);
    }
    assert.equal(await v.validateRequestWithBody(sig, url, Buffer.from(body)), true, "a Buffer body");
  });

  it("validate() says which token matched", async () => {
    const v = new WebhookValidator(broker, "webhooks");
    const r = await v.validate({ signature: sign(token1, URL1, PARAMS), url: URL1, params: PARAMS });
    assert.deepEqual(r, { valid: true, matched: "current" });
  });
});

describe("MintAccessToken", () => {
  it("a Twilio Access Token signed with the key secret; the object hides it", async () => {
    const t = await broker.mintAccessToken({
      credential: "messaging",
      identity: "user-42",
      ttlSeconds: 600,
      video: { room: "standup" },
    });
    assert.ok(t instanceof credbroker.AccessToken);
    assert.ok(t.expiresAt > new Date());
    const [header, payload, signature] = t.toJwt().split(".");
    const dec = (s) => JSON.parse(Buffer.from(s, "base64url").toString());
    assert.equal(dec(header).cty, "twilio-fpa;v=1");
    assert.equal(dec(header).alg, "HS256");
    const claims = dec(payload);
    assert.equal(claims.iss, SK);
    assert.equal(claims.sub, AC);
    assert.equal(claims.grants.identity, "user-42");
    assert.equal(claims.grants.video.room, "standup");
    assert.ok(claims.exp - claims.iat <= 600);
    const mac = crypto.createHmac("sha256", keySecret).update(`${header}.${payload}`).digest("base64url");
    assert.ok(mac === signature, "HS256 with the API Key Secret");
    h.remember(t.toJwt());
    h.assertNoSecret(inspect(t) + JSON.stringify(t), [t.toJwt(), ...allSecrets()], "AccessToken");
  });
});
