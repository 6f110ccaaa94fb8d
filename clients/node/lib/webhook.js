"use strict";
// Webhook validation that asks the broker, shaped like twilio-node's
// validateRequest / validateRequestWithBody minus the Auth Token argument
// (the token stays in the broker), and async:
//
//   twilio.validateRequest(authToken, signature, url, params)
//     → await validator.validateRequest(signature, url, params)
//   twilio.validateRequestWithBody(authToken, signature, url, body)
//     → await validator.validateRequestWithBody(signature, url, body)
//
// The broker tries the current Auth Token, then the previous one during a
// rotation's grace window (validate() says which matched), and the URL as
// given, with the default port added and with the port removed (as
// twilio-python does). twilio-node instead signs the URL as WHATWG's URL
// parser rewrites it (lower-case host, "/" for an empty path, spaces and
// non-ASCII percent-encoded), and that again with the query string
// re-encoded by Node's querystring module; so when the URL as given does
// not match, those forms are asked too. A signature twilio-node accepts is
// thus accepted here as well.

const querystring = require("node:querystring");

/** The URL forms twilio-node signs, other than `url` itself. */
function twilioNodeForms(url) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return [];
  }
  const forms = [parsed.toString()];
  if (parsed.search) {
    const qs = querystring.parse(parsed.search.slice(1));
    parsed.search = "";
    forms.push(`${parsed.toString()}?${querystring.stringify(qs)}`);
  }
  return forms;
}

class WebhookValidator {
  #broker;
  /**
   * @param {Broker} broker
   * @param {string} credential an auth_token credential
   */
  constructor(broker, credential) {
    this.#broker = broker;
    this.credential = credential;
  }

  /**
   * @param {object} req { signature, url, params?, body? }
   * @returns {Promise<{valid: boolean, matched: "current"|"previous"|""}>}
   */
  async validate({ signature, url, params, body }) {
    if (!signature) return { valid: false, matched: "" };
    url = String(url);
    let answer = { valid: false, matched: "" };
    for (const form of new Set([url, ...twilioNodeForms(url)])) {
      answer = await this.#broker.validateWebhook({
        credential: this.credential,
        url: form,
        params,
        body,
        signature,
      });
      if (answer.valid) break;
    }
    return answer;
  }

  /** Form-encoded webhooks: params as Express's req.body (values may be arrays). */
  async validateRequest(twilioHeader, url, params) {
    return (await this.validate({ signature: twilioHeader, url, params: params || {} })).valid;
  }

  /** JSON webhooks: the URL's bodySHA256 must match the raw body. */
  async validateRequestWithBody(twilioHeader, url, body) {
    return (await this.validate({ signature: twilioHeader, url, body: body == null ? "" : body })).valid;
  }
}

module.exports = { WebhookValidator, RequestValidator: WebhookValidator };
