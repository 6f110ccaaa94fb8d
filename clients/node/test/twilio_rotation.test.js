"use strict";
// twilioClient() against the real daemon and the Twilio fake: twilio-node
// 5.13.1 builds every request (messages.list, verify verifications.create);
// a RequestClient subclass only sends https://*.twilio.com to the fake.
// Continuous requests run across a full API-key rotation and a full Auth
// Token rotation, started with `credbroker rotate` as a CronJob would: no
// request fails and the client is never rebuilt. A 401 20003 during a grace
// window is retried once with `previous`; none is retried without one; no
// secret shows in the client, its errors, or its transport errors.

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const { inspect } = require("node:util");
const twilio = require("twilio");
const { Broker, twilioClient, WebhookValidator, UnavailableError } = require("..");
const h = require("./support/harness");

const AC = h.sid("AC");
const AC2 = h.sid("AC");
const SK1 = h.sid("SK");
const SK3 = h.sid("SK");
const SK4 = h.sid("SK");
const SK5 = h.sid("SK");
const VA = h.sid("VA");
const VA2 = h.sid("VA");
const TO = "+15005550006";
let adminToken, token2, secret1, secret3, secret4, secret5;
let dir, fake, daemon, broker;
const seen = []; // every secret, for the leak checks

const ROTATION = (grace, admin = true) => `schedule = "0 0 0 1 1 * 2099"
grace = "${grace}"
${admin ? 'admin_credential = "twilio-admin"\n' : ""}`;

const CONFIG_TAIL = `
[credentials.twilio-admin]
store = "local"
path = "admin"

[credentials.verify]
store = "local"
path = "verify"
kind = "api_key"
[credentials.verify.rotation]
${ROTATION("4s")}
[credentials.acct2]
store = "local"
path = "acct2"
kind = "auth_token"
[credentials.acct2.rotation]
${ROTATION("4s", false)}
[credentials.graceful]
store = "local"
path = "graceful"
kind = "api_key"
[credentials.graceful.rotation]
${ROTATION("2m")}
[credentials.plain]
store = "local"
path = "plain"
kind = "api_key"

[credentials.admin_rpc]
store = "local"
path = "admin_rpc"
kind = "api_key"
[credentials.admin_rpc.rotation]
${ROTATION("3s")}
[credentials.dynamic]
kind = "dynamic_api_key"
admin_credential = "twilio-admin"
ttl = "4s"
policy = '{"allow": ["/twilio/messaging/messages/read", "/twilio/verify/services/verifications/create"]}'
`;

/** Every form a secret seen so far may leak in (as is, base64 of user:secret). */
const leakForms = () =>
  seen.flatMap((s) => h.leakForms(s, [AC, AC2, SK1, SK3, SK4, SK5, ...extraSids]));
const extraSids = [];
function assertClean(value, what) {
  h.assertNoSecret(inspect(value, { depth: 12, showHidden: true }), leakForms(), `${what} (inspect)`);
  if (value instanceof Error) h.assertNoSecret(String(value.stack), leakForms(), `${what} (stack)`);
}

/**
 * Requests from `workers` loops, each pausing `pauseMs`, until stop():
 * alternately messages.list({limit: 1}) and a Verify verification.
 */
function load(client, serviceSid, { workers = 2, pauseMs = 40 } = {}) {
  const stats = { ok: 0, failed: 0, errors: [] };
  let stopped = false;
  const loops = Array.from({ length: workers }, async (_, w) => {
    for (let i = w; !stopped; i++) {
      try {
        if (i % 2) await client.messages.list({ limit: 1 });
        else await client.verify.v2.services(serviceSid).verifications.create({ to: TO, channel: "sms" });
        stats.ok++;
      } catch (err) {
        stats.failed++;
        stats.errors.push(`${err.status || ""} ${err.code || ""} ${err.message}`.slice(0, 200));
      }
      await new Promise((r) => setTimeout(r, pauseMs));
    }
  });
  return {
    stats,
    async stop() {
      stopped = true;
      await Promise.all(loops);
      return stats;
    },
  };
}

async function keySids() {
  return (await fake.get("/__fake/state")).keys.map((k) => k.sid);
}

before(async () => {
  adminToken = h.newToken();
  token2 = h.newToken();
  secret1 = h.newKeySecret();
  secret3 = h.newKeySecret();
  secret4 = h.newKeySecret();
  secret5 = h.newKeySecret();
  seen.push(adminToken, token2, secret1, secret3, secret4, secret5);
  dir = h.tmpDir("twilio");
  fake = await h.startFake(dir, {
    accounts: [
      { sid: AC, auth_token: adminToken },
      { sid: AC2, auth_token: token2 },
    ],
    keys: [
      { account_sid: AC, sid: SK1, secret: secret1, type: "standard" },
      { account_sid: AC, sid: SK3, secret: secret3, type: "standard" },
      { account_sid: AC, sid: SK4, secret: secret4, type: "standard" },
      { account_sid: AC, sid: SK5, secret: secret5, type: "standard" },
    ],
    services: [
      { sid: VA, account_sid: AC },
      { sid: VA2, account_sid: AC2 },
    ],
  });
  const key = (sid, secret) => ({ account_sid: AC, api_key_sid: sid, api_key_secret: secret });
  h.writeJsonAtomic(path.join(dir, "secrets.json"), {
    admin: { account_sid: AC, auth_token: adminToken },
    verify: key(SK1, secret1),
    acct2: { account_sid: AC2, auth_token: token2 },
    graceful: key(SK3, secret3),
    plain: key(SK4, secret4),
    admin_rpc: key(SK5, secret5),
  });
  daemon = await h.startDaemon(dir, h.configHead(dir, fake.url) + CONFIG_TAIL);
  broker = new Broker(daemon.socket);
});
after(async () => {
  if (broker) broker.close();
  if (daemon) await daemon.stop();
  if (fake) await fake.stop();
});

const opts = () => ({ httpClient: h.fakeHttpClient(fake.url) });

describe("twilioClient: a real twilio-node client on the broker's credential", () => {
  it("is a twilio.Twilio whose SDK-built requests reach Twilio with the API key", async () => {
    const client = await twilioClient(broker, "plain", opts());
    assert.ok(client instanceof twilio.Twilio);
    assert.equal(client.accountSid, AC);
    const page = await client.messages.list({ limit: 1 });
    assert.deepEqual(page, []);
    const v = await client.verify.v2.services(VA).verifications.create({ to: TO, channel: "sms" });
    assert.equal(v.status, "pending");
    const reqs = (await fake.requests()).slice(-2);
    assert.deepEqual(
      reqs.map((r) => [r.method, r.route, r.status, r.username]),
      [
        ["GET", "/2010-04-01/Accounts/{AccountSid}/Messages.json", 200, SK4],
        ["POST", "/v2/Services/{ServiceSid}/Verifications", 201, SK4],
      ],
    );
    assertClean(client, "the client after requests");
    assert.equal(JSON.stringify(client), JSON.stringify({ credential: "plain", accountSid: AC }));
  });

  /**
   * Load on `client` while `credbroker rotate` switches credential `name`
   * (`switched(c)` says a lease carries the new value), then retires the old
   * value (`retired(c)`, c the lease of the switch), then 10 requests more.
   */
  async function rotateUnderLoad({ client, name, serviceSid, switched, retired, inGrace }) {
    await fake.post("/__fake/reset-counters");
    const run = load(client, serviceSid);
    const phases = {};
    try {
      await h.waitFor(() => run.stats.ok >= 10, 15000, "requests before the rotation");
      const rotated = await daemon.rotate(name);
      assert.equal(rotated.code, 0, `credbroker rotate: ${rotated.stdout}${rotated.stderr}`);
      assert.match(rotated.stdout, new RegExp(`^${name}: rotated; the previous value retires at `, "m"));
      phases.during = await h.waitFor(
        async () => {
          const c = await broker.get(name);
          return switched(c) && c.previous ? c : null;
        },
        10000,
        "the new value with the old one as previous",
      );
      seen.push(h.remember(phases.during.exposeSecret()));
      assertClean(phases.during, "a lease carrying previous");
      h.assertNoSecret(JSON.stringify(phases.during), leakForms(), "a lease carrying previous (JSON)");
      phases.okAtSwitch = run.stats.ok;
      if (inGrace) await inGrace(phases.during);
      // The daemon retires the old value at retire_at by itself, though
      // `credbroker rotate` (as a CronJob would) promoted it: it sees the
      // new document and works its schedule out again.
      await h.waitFor(() => retired(phases.during), 15000, "the old value's retirement at Twilio");
      await h.waitFor(async () => (await broker.get(name)).previous === null, 15000, "previous dropped");
      phases.okAtRetire = run.stats.ok;
      await h.waitFor(() => run.stats.ok >= phases.okAtRetire + 10, 15000, "requests after the retirement");
    } finally {
      await run.stop();
    }
    const { stats } = run;
    assert.equal(stats.failed, 0, `failed requests: ${stats.errors.slice(0, 5).join(" | ")}`);
    assert.ok(
      phases.okAtSwitch > 0 && phases.okAtRetire > phases.okAtSwitch,
      `requests in every phase: ok ${stats.ok}, at the switch ${phases.okAtSwitch}, at retirement ${phases.okAtRetire}`,
    );
    return phases.during;
  }

  it("continuous requests across a full API-key rotation: 0 failed, no restart", async () => {
    const client = await twilioClient(broker, "verify", opts());
    const during = await rotateUnderLoad({
      client,
      name: "verify",
      serviceSid: VA,
      switched: (c) => c.apiKeySid !== SK1,
      retired: async () => !(await keySids()).includes(SK1),
    });
    const newSid = during.apiKeySid;
    extraSids.push(newSid);
    assert.equal(during.previous.apiKeySid, SK1);
    const mine = (await fake.requests()).filter((r) => r.username === SK1 || r.username === newSid);
    assert.ok(mine.every((r) => r.status < 300), "no request was refused, not even once and retried");
    assert.ok(mine.some((r) => r.username === SK1 && r.status < 300), "requests with the old key");
    assert.ok(mine.some((r) => r.username === newSid && r.status < 300), "requests with the new key");
    const last = mine.slice(-10);
    assert.ok(
      last.length === 10 && last.every((r) => r.username === newSid && r.status < 300),
      `the last requests use the new key: ${JSON.stringify(last.map((r) => [r.username === newSid, r.status]))}`,
    );
    assert.ok(await fake.valid(newSid, during.exposeSecret()), "the new key works at Twilio");
    assertClean(client, "the client after an API key rotation");
  });

  it("continuous requests across a full Auth Token rotation: 0 failed, no restart; webhooks pass with either token in the grace window", async () => {
    const client = await twilioClient(broker, "acct2", opts());
    assert.equal(client.accountSid, AC2);
    const during = await rotateUnderLoad({
      client,
      name: "acct2",
      serviceSid: VA2,
      switched: (c) => c.exposeSecret() !== token2,
      retired: async () => !(await fake.valid(AC2, token2)),
      // Webhooks signed with either token pass during the grace window.
      inGrace: async (c) => {
        const v = new WebhookValidator(broker, "acct2");
        const url = "https://app.example.com/twilio/status";
        const params = { MessageSid: h.sid("SM"), MessageStatus: "delivered" };
        for (const [token, matched] of [
          [token2, "previous"],
          [c.exposeSecret(), "current"],
        ]) {
          const signature = twilio.getExpectedTwilioSignature(token, url, params);
          assert.equal(twilio.validateRequest(token, signature, url, params), true);
          assert.deepEqual(await v.validate({ signature, url, params }), { valid: true, matched });
        }
      },
    });
    assert.ok(during.previous.exposeSecret() === token2, "previous is the old primary");
    assert.ok(await fake.valid(AC2, during.exposeSecret()), "the new token is the account's token");
    const mine = (await fake.requests()).filter((r) => r.username === AC2);
    assert.ok(mine.length >= 30 && mine.every((r) => r.status < 300), "every request of the client succeeded");
    assertClean(client, "the client after an Auth Token rotation");
  });

  it("a 401 20003 in a grace window is retried once with the previous key", async () => {
    const client = await twilioClient(broker, "graceful", opts());
    const rotated = await daemon.rotate("graceful");
    assert.equal(rotated.code, 0, `credbroker rotate: ${rotated.stdout}${rotated.stderr}`);
    const c = await h.waitFor(
      async () => {
        const c = await broker.get("graceful");
        return c.previous ? c : null;
      },
      10000,
      "the rotated key",
    );
    extraSids.push(c.apiKeySid);
    seen.push(h.remember(c.exposeSecret()));
    const path_ = `/2010-04-01/Accounts/${AC}/Messages.json`;
    // Wait until the client's watch has the new key.
    await h.waitFor(
      async () => {
        await client.messages.list({ limit: 1 });
        return (await fake.requests()).at(-1).username === c.apiKeySid;
      },
      10000,
      "the client to use the new key",
    );
    await fake.post("/__fake/fail", { path_prefix: path_, status: 401, count: 1 });
    const page = await client.messages.list({ limit: 1 });
    assert.deepEqual(page, []);
    const last = (await fake.requests()).slice(-2);
    assert.deepEqual(
      last.map((r) => [r.path, r.status, r.username]),
      [
        [path_, 401, c.apiKeySid],
        [path_, 200, SK3],
      ],
      "one 401 with the current key, then one retry with previous",
    );
  });

  it("without previous a 401 20003 reaches the caller after one request, with no secret", async () => {
    const client = await twilioClient(broker, "plain", opts());
    await client.messages.list({ limit: 1 });
    await fake.post("/__fake/reset-counters");
    const before = (await fake.requests()).length;
    await fake.post("/__fake/fail", { path_prefix: `/2010-04-01/Accounts/${AC}/Messages.json`, status: 401, count: 1 });
    const err = await client.messages.list({ limit: 1 }).catch((e) => e);
    assert.ok(err instanceof twilio.RestException, inspect(err));
    assert.equal(err.status, 401);
    assert.equal(err.code, 20003);
    assert.equal((await fake.requests()).length, before + 1, "not retried: nothing else to try");
    assertClean(err, "RestException");
  });

  it("a transport error carries no secret (axios config and request redacted)", async () => {
    const client = await twilioClient(broker, "plain", { httpClient: h.fakeHttpClient("http://127.0.0.1:1") });
    const err = await client.messages.list({ limit: 1 }).catch((e) => e);
    assert.ok(err instanceof Error);
    assert.match(err.message, /ECONNREFUSED|connect/);
    assertClean(err, "transport error");
    h.assertNoSecret(JSON.stringify(err.toJSON ? err.toJSON() : err), leakForms(), "transport error JSON");
  });

  it("broker.rotate() (RotationAdmin): the daemon's own scheduler then retires the old key at retire_at", async () => {
    const client = await twilioClient(broker, "admin_rpc", opts());
    const status = await broker.rotate("admin_rpc");
    assert.equal(status.step, "promoted", inspect(status));
    // The broker picks the rotator's write up as any store change: soon, not at once.
    const c = await h.waitFor(
      async () => {
        const c = await broker.get("admin_rpc");
        return c.previous ? c : null;
      },
      10000,
      "the new key",
    );
    extraSids.push(c.apiKeySid);
    seen.push(h.remember(c.exposeSecret()));
    assert.equal(c.previous.apiKeySid, SK5);
    // No `credbroker rotate --no-start` here: the daemon wakes at retire_at itself.
    await h.waitFor(async () => !(await keySids()).includes(SK5), 15000, "the daemon to delete the old key");
    await h.waitFor(async () => (await broker.rotationStatus("admin_rpc")).step === "idle", 15000, "idle");
    await client.messages.list({ limit: 1 });
    assert.equal((await fake.requests()).at(-1).username, c.apiKeySid);
  });

  it("dynamic_api_key (not watchable): leases renewed before their end, 0 failed across 3 keys", async () => {
    const client = await twilioClient(broker, "dynamic", opts());
    await fake.post("/__fake/reset-counters");
    const run = load(client, VA);
    const sids = () => new Set(run.keysSeen);
    try {
      await h.waitFor(
        async () => {
          const usernames = (await fake.requests()).map((r) => r.username).filter((u) => u && u.startsWith("SK"));
          run.keysSeen = usernames;
          return sids().size >= 3;
        },
        30000,
        "requests with three successive keys",
      );
    } finally {
      await run.stop();
    }
    assert.equal(run.stats.failed, 0, `failed requests: ${run.stats.errors.slice(0, 5).join(" | ")}`);
    const reqs = (await fake.requests()).filter((r) => r.username && r.username.startsWith("SK"));
    assert.ok(reqs.length >= 20, `${reqs.length} requests`);
    const refused = reqs.filter((r) => r.status >= 300);
    // A request may reach Twilio just as its key is deleted: it is then
    // retried once with a fresh lease, so the caller never sees it.
    assert.ok(refused.length <= 2, `refused then retried: ${refused.length}`);
  });

  it("daemon down past the lease: UnavailableError, no expired lease used; back up: the same client works", async () => {
    const client = await twilioClient(broker, "plain", opts());
    await client.messages.list({ limit: 1 });
    const lease = await broker.get("plain");
    await daemon.stop();
    await new Promise((r) => setTimeout(r, Math.max(0, lease.expiresAt.getTime() - Date.now()) + 300));
    await fake.post("/__fake/reset-counters");
    const err = await client.messages.list({ limit: 1 }).catch((e) => e);
    assert.ok(err instanceof UnavailableError, inspect(err));
    assert.match(err.message, /"plain"/);
    assertClean(err, "UnavailableError");
    assert.equal((await fake.requests()).length, 0, "nothing sent to Twilio on an expired lease");
    daemon = await h.startDaemon(dir, fs.readFileSync(daemon.configPath, "utf8"), { logName: "daemon2.log" });
    await h.waitFor(
      () => client.messages.list({ limit: 1 }).then(() => true, () => false),
      15000,
      "the same client to work again",
    );
  });

  it("an unknown credential is a NotFoundError from twilioClient()", async () => {
    const err = await twilioClient(broker, "nope", opts()).catch((e) => e);
    assert.ok(err instanceof require("..").NotFoundError, inspect(err));
  });
});
