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
// rotation's grace window (validate() says which matched).

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
  validate({ signature, url, params, body }) {
    if (!signature) return Promise.resolve({ valid: false, matched: "" });
    return this.#broker.validateWebhook({ credential: this.credential, url, params, body, signature });
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
