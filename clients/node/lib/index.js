"use strict";
// credbroker: Twilio credentials from a credbroker daemon, for Node.
//   Broker            get / watch / list / validateWebhook / mintAccessToken
//   twilioClient      a twilio-node Twilio client that follows rotations
//   WebhookValidator  (alias RequestValidator) X-Twilio-Signature checks in the broker

const { Broker } = require("./broker");
const { twilioClient } = require("./twilio");
const { WebhookValidator, RequestValidator } = require("./webhook");
const { Credential, PreviousCredential, AccessToken } = require("./credential");
const errors = require("./errors");

module.exports = {
  Broker,
  twilioClient,
  WebhookValidator,
  RequestValidator,
  Credential,
  PreviousCredential,
  AccessToken,
  CredbrokerError: errors.CredbrokerError,
  NotFoundError: errors.NotFoundError,
  PermissionDeniedError: errors.PermissionDeniedError,
  UnavailableError: errors.UnavailableError,
  InvalidArgumentError: errors.InvalidArgumentError,
  FailedPreconditionError: errors.FailedPreconditionError,
};
