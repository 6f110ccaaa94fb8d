#!/usr/bin/env node
// The package ships its own copy of the repository's proto
// (proto/credbroker/v1/broker.proto), so that an installed package needs
// nothing from the repository. `npm run sync-proto` refreshes the copy;
// `--check` (run by `npm pack` through prepack, and by test/package.test.js)
// fails when the copy differs from the repository's.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

const REL = path.join("proto", "credbroker", "v1", "broker.proto");
const pkgDir = path.resolve(__dirname, "..");
const repoProto = path.resolve(pkgDir, "..", "..", REL);
const copy = path.join(pkgDir, REL);

if (!fs.existsSync(repoProto)) {
  console.error(`sync-proto: ${repoProto} not found (not inside the credbroker repository)`);
  process.exit(1);
}
const want = fs.readFileSync(repoProto);
if (process.argv.includes("--check")) {
  const have = fs.existsSync(copy) ? fs.readFileSync(copy) : null;
  if (!have || !have.equals(want)) {
    console.error(`sync-proto: ${copy} differs from ${repoProto}; run npm run sync-proto`);
    process.exit(1);
  }
} else {
  fs.mkdirSync(path.dirname(copy), { recursive: true });
  fs.writeFileSync(copy, want);
  console.log(`sync-proto: copied ${repoProto} to ${copy}`);
}
