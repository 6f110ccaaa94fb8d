"use strict";
// The package's errors. Every message names the credential and the broker's
// reason; none ever carries a secret (the daemon's messages never do, and
// the package adds only names and status codes).

const grpc = require("@grpc/grpc-js");

const CODE_NAMES = Object.fromEntries(
  Object.entries(grpc.status).map(([name, code]) => [code, name]),
);

/** Base class: `credential` (name or null), `code` (gRPC status name or null). */
class CredbrokerError extends Error {
  constructor(message, { credential = null, code = null } = {}) {
    super(message);
    this.name = this.constructor.name;
    this.credential = credential;
    this.code = code;
  }
}
/** NOT_FOUND: no credential of that name (said only to callers allowed on some credential). */
class NotFoundError extends CredbrokerError {}
/** PERMISSION_DENIED: this process's uid/gid may not read the credential. */
class PermissionDeniedError extends CredbrokerError {}
/** UNAVAILABLE: the broker cannot be reached, is shutting down, or its store is down past max_stale. */
class UnavailableError extends CredbrokerError {}
/** INVALID_ARGUMENT: a bad request (e.g. an Access Token TTL over the policy's). */
class InvalidArgumentError extends CredbrokerError {}
/** FAILED_PRECONDITION: e.g. WatchCredential on a dynamic_api_key. */
class FailedPreconditionError extends CredbrokerError {}

const BY_CODE = {
  [grpc.status.NOT_FOUND]: NotFoundError,
  [grpc.status.PERMISSION_DENIED]: PermissionDeniedError,
  [grpc.status.UNAVAILABLE]: UnavailableError,
  [grpc.status.INVALID_ARGUMENT]: InvalidArgumentError,
  [grpc.status.FAILED_PRECONDITION]: FailedPreconditionError,
};

/**
 * Turns a grpc-js error into one of ours. The grpc-js error is not kept as
 * `cause`: its metadata and call details add nothing a user can act on.
 */
function fromGrpc(err, method, credential) {
  const codeName = CODE_NAMES[err.code] || "UNKNOWN";
  const Cls = BY_CODE[err.code] || CredbrokerError;
  const what = credential ? `credential "${credential}"` : "the broker";
  const details = typeof err.details === "string" && err.details ? `: ${err.details}` : "";
  return new Cls(`credbroker ${method} ${what}: ${codeName}${details}`, {
    credential,
    code: codeName,
  });
}

/** Codes after which a watch reconnects (the others will not change by waiting). */
function isTransient(code) {
  return ![
    "NOT_FOUND",
    "PERMISSION_DENIED",
    "INVALID_ARGUMENT",
    "FAILED_PRECONDITION",
    "UNIMPLEMENTED",
    "UNAUTHENTICATED",
  ].includes(code);
}

module.exports = {
  CredbrokerError,
  NotFoundError,
  PermissionDeniedError,
  UnavailableError,
  InvalidArgumentError,
  FailedPreconditionError,
  fromGrpc,
  isTransient,
};
