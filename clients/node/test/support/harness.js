"use strict";
// Test harness: the real credbroker daemon ($CREDBROKER_BIN) on a file store
// and the Twilio fake (tests/support/twilio_fake.py), each a child process
// stopped by its PID. Every secret a test makes or sees is appended to
// $CREDBROKER_TEST_SECRETS (tests/clients_node.sh then checks that none
// appears in the test output or the daemon's and fake's logs).

const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const os = require("node:os");
const { spawn, execFile } = require("node:child_process");
const readline = require("node:readline");
const twilio = require("twilio");

const REPO = path.resolve(__dirname, "..", "..", "..", "..");
const FAKE = path.join(REPO, "tests", "support", "twilio_fake.py");
const BIN = process.env.CREDBROKER_BIN;
const TMP_ROOT = process.env.CREDBROKER_TEST_TMP || os.tmpdir();
const SECRETS_FILE = process.env.CREDBROKER_TEST_SECRETS || null;

const children = new Set();
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});

const hex = (n) => crypto.randomBytes(n / 2).toString("hex");
const sid = (prefix) => prefix + hex(32);

/** Records a secret for the leak scans of tests/clients_node.sh; returns it. */
function remember(secret) {
  if (SECRETS_FILE && secret) fs.appendFileSync(SECRETS_FILE, secret + "\n", { mode: 0o600 });
  return secret;
}
const newToken = () => remember(hex(32));
const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/** 32 letters and digits, as Twilio's API Key Secrets. */
const newKeySecret = () =>
  remember(Array.from(crypto.randomBytes(32), (b) => ALNUM[b % ALNUM.length]).join(""));

/** Every way a secret may be written: as is, and in Basic auth forms. */
function leakForms(secret, usernames = []) {
  const forms = [secret];
  for (const u of usernames) forms.push(Buffer.from(`${u}:${secret}`).toString("base64"));
  return forms;
}
/** Asserts that `text` holds none of `secrets` (without printing them). */
function assertNoSecret(text, secrets, what) {
  secrets.forEach((s, i) => {
    assert.ok(!text.includes(s), `${what}: contains secret #${i}`);
  });
}

function tmpDir(name) {
  return fs.mkdtempSync(path.join(TMP_ROOT, `${name}-`));
}

/** Polls `fn` (sync or async; truthy = done) every 50 ms up to `ms`. */
async function waitFor(fn, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function stopChild(child, ms = 15000) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode);
    const t = setTimeout(() => child.kill("SIGKILL"), ms);
    child.once("exit", (code) => {
      clearTimeout(t);
      children.delete(child);
      resolve(code);
    });
    child.kill("SIGTERM");
  });
}

/** The Twilio fake on a free port. */
async function startFake(dir, seed = {}) {
  const seedPath = path.join(dir, "fake-seed.json");
  fs.writeFileSync(seedPath, JSON.stringify(seed), { mode: 0o600 });
  const log = fs.openSync(path.join(dir, "fake.log"), "a");
  const child = spawn("python3", [FAKE, "--port", "0", "--seed", seedPath], {
    stdio: ["ignore", "pipe", log],
  });
  children.add(child);
  const port = await new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout });
    rl.once("line", (line) => {
      const m = /^PORT=(\d+)$/.exec(line.trim());
      m ? resolve(Number(m[1])) : reject(new Error(`twilio_fake.py said ${line}`));
    });
    child.once("exit", (code) => reject(new Error(`twilio_fake.py exited ${code} at start`)));
  });
  const url = `http://127.0.0.1:${port}`;
  async function call(method, p, body) {
    const res = await fetch(url + p, {
      method,
      headers: { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await res.json();
    if (!res.ok) throw new Error(`fake ${method} ${p}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  }
  return {
    url,
    port,
    child,
    post: (p, body) => call("POST", p, body ?? {}),
    get: (p) => call("GET", p),
    /** Whether Twilio (the fake) accepts username:password now. */
    valid: async (username, password) => (await call("POST", "/__fake/check", { username, password })).valid,
    requests: async () => (await call("GET", "/__fake/requests")).requests,
    stop: () => stopChild(child),
  };
}

/** A twilio-node RequestClient that sends https://*.twilio.com requests to the fake. */
function fakeHttpClient(fakeUrl) {
  class FakeTwilioHosts extends twilio.RequestClient {
    request(opts) {
      const uri = opts.uri.replace(/^https:\/\/[a-z0-9.-]*twilio\.com(:\d+)?/, fakeUrl);
      return super.request({ ...opts, uri });
    }
  }
  return new FakeTwilioHosts();
}

function writeJsonAtomic(file, doc) {
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(doc, null, 1), { mode: 0o600 });
  fs.renameSync(tmp, file);
}

/** The config's head: socket, root allowed, fast leases, the fake as Twilio, one file store. */
function configHead(dir, fakeUrl, { leaseTtl = "2s", refresh = "1s", oauth = false } = {}) {
  const twilioBases = fakeUrl
    ? `[twilio]\napi_base = "${fakeUrl}"\niam_base = "${fakeUrl}"\naccounts_base = "${fakeUrl}"\n${
        oauth ? `oauth_base = "${fakeUrl}"\n` : ""
      }\n`
    : "";
  return `[server]
socket = "${dir}/broker.sock"
allow_root = true
lock_memory = false

[defaults]
lease_ttl = "${leaseTtl}"
refresh_interval = "${refresh}"

${twilioBases}[stores.local]
type = "file"
path = "${dir}/secrets.json"
`;
}

function run(cmd, args, opts = {}) {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 60000, ...opts }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === "number" ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}

/** The daemon, serving `config` (a string) from `dir`; resolves once health says SERVING. */
async function startDaemon(dir, config, { logName = "daemon.log" } = {}) {
  assert.ok(BIN && fs.existsSync(BIN), "CREDBROKER_BIN must name the credbroker binary");
  const configPath = path.join(dir, "config.toml");
  fs.writeFileSync(configPath, config);
  const socket = path.join(dir, "broker.sock");
  const log = fs.openSync(path.join(dir, logName), "a");
  const child = spawn(BIN, ["serve", "--config", configPath], {
    stdio: ["ignore", log, log],
    env: { ...process.env, CREDBROKER_LOG: process.env.CREDBROKER_TEST_LOG || "debug" },
  });
  children.add(child);
  let exited = null;
  child.once("exit", (code) => (exited = code));
  await waitFor(
    async () => {
      if (exited !== null) throw new Error(`the daemon exited ${exited} at start; see ${dir}/${logName}`);
      return (await run(BIN, ["health", "--socket", socket])).code === 0;
    },
    30000,
    "the daemon to serve",
  );
  return {
    child,
    socket,
    configPath,
    pid: child.pid,
    stop: () => stopChild(child),
    /** `credbroker rotate` as a CronJob would run it; its output also goes to rotate.log (scanned for secrets). */
    rotate: async (name, extra = []) => {
      const args = ["rotate", "--credential", name, ...extra, "--config", configPath];
      const out = await run(BIN, args, { env: { ...process.env, CREDBROKER_LOG: "debug" } });
      fs.appendFileSync(path.join(dir, "rotate.log"), `$ credbroker ${args.join(" ")}\n${out.stdout}${out.stderr}`);
      return out;
    },
  };
}

module.exports = {
  REPO,
  BIN,
  hex,
  sid,
  remember,
  newToken,
  newKeySecret,
  leakForms,
  assertNoSecret,
  tmpDir,
  waitFor,
  startFake,
  fakeHttpClient,
  writeJsonAtomic,
  configHead,
  startDaemon,
  run,
};
