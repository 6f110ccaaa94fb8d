"use strict";
// The package as shipped: its proto copy is the repository's, byte for byte;
// npm pack would ship the proto, lib and README; versions are pinned.

const { it } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const { execFileSync } = require("node:child_process");
const { REPO } = require("./support/harness");

const PKG = path.resolve(__dirname, "..");
const REL = path.join("proto", "credbroker", "v1", "broker.proto");

it("the shipped proto is identical to the repository's proto/credbroker/v1/broker.proto", () => {
  const repo = fs.readFileSync(path.join(REPO, REL));
  const copy = fs.readFileSync(path.join(PKG, REL));
  assert.ok(copy.equals(repo), "clients/node/proto differs from proto/: run `npm run sync-proto` in clients/node");
  assert.equal(require("../lib/broker").PROTO, path.join(PKG, REL), "the client loads the shipped copy");
});

it("npm pack ships index.js, lib/, the proto and the README, and no tests", () => {
  const out = execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], {
    cwd: PKG,
    encoding: "utf8",
    env: { ...process.env, npm_config_cache: process.env.npm_config_cache || path.join(require("node:os").homedir(), ".cache", "credbroker", "npm") },
  });
  const files = JSON.parse(out)[0].files.map((f) => f.path);
  for (const want of ["index.js", "index.d.ts", "lib/index.js", "lib/twilio.js", REL, "README.md", "package.json"]) {
    assert.ok(files.includes(want), `${want} is packed: ${files.join(", ")}`);
  }
  assert.ok(!files.some((f) => f.startsWith("test/")), "tests are not packed");
});

it("dependencies and devDependencies are pinned to exact versions; twilio is 5.13.1; the lock agrees", () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(PKG, "package.json"), "utf8"));
  const lock = JSON.parse(fs.readFileSync(path.join(PKG, "package-lock.json"), "utf8"));
  assert.equal(pkg.name, "credbroker");
  assert.equal(pkg.dependencies.twilio, "5.13.1");
  for (const [name, version] of Object.entries({ ...pkg.dependencies, ...pkg.devDependencies })) {
    assert.match(version, /^\d+\.\d+\.\d+$/, `${name} is pinned exactly`);
    assert.equal(lock.packages[`node_modules/${name}`].version, version, `the lock has ${name}@${version}`);
  }
  assert.equal(require("twilio/package.json").version, "5.13.1", "the installed twilio-node");
});

it('require("credbroker") exports Broker, twilioClient and a RequestValidator-style checker', () => {
  const cb = require("..");
  for (const name of ["Broker", "twilioClient", "WebhookValidator", "RequestValidator", "CredbrokerError"]) {
    assert.equal(typeof cb[name], "function", name);
  }
  for (const m of ["validateRequest", "validateRequestWithBody"]) {
    assert.equal(typeof cb.WebhookValidator.prototype[m], "function", m);
  }
});
