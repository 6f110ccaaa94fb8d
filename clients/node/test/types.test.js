"use strict";
// index.d.ts describes the package as used in its README: tsc --strict
// type-checks test/fixtures/usage.ts against it and twilio-node's types.

const { it } = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");
const { execFileSync } = require("node:child_process");

it("index.d.ts type-checks the README's usage (tsc --strict)", () => {
  const pkg = path.resolve(__dirname, "..");
  const tsc = path.join(pkg, "node_modules", "typescript", "bin", "tsc");
  const args = [
    tsc,
    "--noEmit",
    "--strict",
    "--skipLibCheck",
    "--module", "commonjs",
    "--moduleResolution", "node",
    "--target", "es2022",
    "--types", "node",
    path.join(__dirname, "fixtures", "usage.ts"),
  ];
  let out = "";
  try {
    execFileSync(process.execPath, args, { cwd: pkg, encoding: "utf8" });
  } catch (err) {
    out = `${err.stdout || ""}${err.stderr || ""}`;
  }
  assert.equal(out, "", "tsc reported errors");
});
