"use strict";
// kind oauth_client: the daemon holds the OAuth app's client secret and
// serves only bearer tokens, refreshing each after two thirds of its life.
// twilioClient() hands twilio-node a ClientCredentialProvider whose
// TokenManager returns the broker's current token: SDK requests go on,
// with no failure and no restart, across several token refreshes, well
// past the first token's expiry (the fake refuses a token from its exp on).

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");
const { inspect } = require("node:util");
const twilio = require("twilio");
const { Broker, twilioClient } = require("..");
const h = require("./support/harness");

const AC = h.sid("AC");
const OQ = h.sid("OQ");
const VA = h.sid("VA");
const TTL = 4; // seconds of each bearer token: a refresh every 2.7 s
let accountToken, clientSecret;
let dir, fake, daemon, broker;
const tokens = new Set();

before(async () => {
  accountToken = h.newToken();
  clientSecret = h.newKeySecret();
  dir = h.tmpDir("oauth");
  fake = await h.startFake(dir, {
    accounts: [{ sid: AC, auth_token: accountToken }],
    oauth_apps: [{ account_sid: AC, client_id: OQ, client_secret: clientSecret }],
    services: [{ sid: VA, account_sid: AC }],
  });
  await fake.post("/__fake/oauth", { ttl: TTL });
  h.writeJsonAtomic(path.join(dir, "secrets.json"), {
    "twilio/oauth-app": { account_sid: AC, client_id: OQ, client_secret: clientSecret },
  });
  const config =
    h.configHead(dir, fake.url, { oauth: true }) +
    `
[credentials.oauth]
store = "local"
path = "twilio/oauth-app"
`;
  daemon = await h.startDaemon(dir, config);
  broker = new Broker(daemon.socket);
});
after(async () => {
  if (broker) broker.close();
  if (daemon) await daemon.stop();
  if (fake) await fake.stop();
});

function leakForms() {
  return [accountToken, clientSecret, ...tokens];
}

/** Reads the broker's current token (and records it for the leak checks). */
async function current() {
  const c = await broker.get("oauth");
  const t = c.exposeSecret();
  if (!tokens.has(t)) tokens.add(h.remember(t));
  return c;
}

describe("oauth_client: bearer tokens from the broker", () => {
  it("the lease is a bearer token; the client secret is never served", async () => {
    const c = await current();
    assert.equal(c.type, "bearer");
    assert.equal(c.accountSid, AC);
    assert.equal(c.exposeSecret().split(".").length, 3, "a JWT");
    assert.ok(c.tokenExpiresAt > new Date() && c.expiresAt <= c.tokenExpiresAt, "lease ends by the token's exp");
    h.assertNoSecret(inspect(c) + JSON.stringify(c), leakForms(), "bearer credential");
    assert.ok(!JSON.stringify(await broker.list()).includes(clientSecret));
    assert.deepEqual(
      (await broker.list()).find((x) => x.name === "oauth"),
      { name: "oauth", kind: "oauth_client" },
    );
  });

  it("twilioClient uses twilio-node's ClientCredentialProvider with the broker's token", async () => {
    const client = await twilioClient(broker, "oauth", { httpClient: h.fakeHttpClient(fake.url) });
    assert.ok(client instanceof twilio.Twilio);
    assert.equal(client.accountSid, AC);
    assert.equal(client.credentialProvider.authType, "client-credentials");
    assert.equal(client.credentialProvider.clientId, "held-by-credbroker", "a placeholder, never sent");
    assert.equal(client.username, undefined, "no Basic credentials");
    await fake.post("/__fake/reset-counters");
    await client.messages.list({ limit: 1 });
    await client.verify.v2.services(VA).verifications.create({ to: "+15005550006", channel: "sms" });
    const reqs = await fake.requests();
    assert.deepEqual(
      reqs.map((r) => [r.route, r.status, r.username]),
      [
        ["/2010-04-01/Accounts/{AccountSid}/Messages.json", 200, OQ],
        ["/v2/Services/{ServiceSid}/Verifications", 201, OQ],
      ],
      "both sent with a bearer token of the app (the fake logs its client id)",
    );
    h.assertNoSecret(inspect(client), leakForms(), "client");
  });

  it("continuous requests across token refreshes: 0 failed, no restart, past the first token's exp", async () => {
    const client = await twilioClient(broker, "oauth", { httpClient: h.fakeHttpClient(fake.url) });
    const first = await current();
    const firstExp = first.tokenExpiresAt.getTime();
    const stats = { ok: 0, failed: 0, errors: [] };
    let stopped = false;
    await fake.post("/__fake/reset-counters");
    const worker = async (w) => {
      for (let i = w; !stopped; i++) {
        try {
          if (i % 2) await client.messages.list({ limit: 1 });
          else await client.verify.v2.services(VA).verifications.create({ to: "+15005550006", channel: "sms" });
          stats.ok++;
        } catch (err) {
          stats.failed++;
          stats.errors.push(`${err.status || ""} ${err.code || ""} ${err.message}`.slice(0, 200));
        }
        await new Promise((r) => setTimeout(r, 40));
      }
    };
    const loops = [worker(0), worker(1)];
    let okAfterFirstExp = 0;
    try {
      // Three new tokens, and requests for a while after the first token died.
      await h.waitFor(
        async () => {
          await current();
          return tokens.size >= 4 && Date.now() > firstExp + 1000;
        },
        30000,
        "three token refreshes",
      );
      okAfterFirstExp = stats.ok;
      await h.waitFor(() => stats.ok >= okAfterFirstExp + 10, 10000, "requests after the refreshes");
    } finally {
      stopped = true;
      await Promise.all(loops);
    }
    assert.equal(stats.failed, 0, `failed requests: ${stats.errors.slice(0, 5).join(" | ")}`);
    const reqs = (await fake.requests()).filter((r) => r.username === OQ);
    assert.ok(reqs.length >= 30 && reqs.every((r) => r.status < 300), `every request succeeded (${reqs.length})`);
    const lastAt = Math.max(...reqs.map((r) => r.time * 1000));
    assert.ok(lastAt > firstExp + 1000, "requests ran well past the first token's expiry");
    const state = await fake.get("/__fake/state");
    assert.ok(state.tokens_issued >= 4, `the daemon fetched ${state.tokens_issued} tokens`);
    h.assertNoSecret(inspect(client), leakForms(), "client after refreshes");
  });
});
