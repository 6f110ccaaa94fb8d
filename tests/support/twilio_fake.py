#!/usr/bin/env python3
"""A stateful fake of the parts of Twilio's REST API that credbroker uses.

Python 3.11 standard library only. Response bodies follow Twilio's OpenAPI
documents (twilio-oai: twilio_api_v2010.json, twilio_iam_v1.json,
twilio_accounts_v1.json, twilio_verify_v2.json) field for field, and the
tests run it behind `prism proxy --errors` (tests/support/prism.sh) so any
drift from the spec fails the request. One fake serves every Twilio host:

  api.twilio.com       GET  /2010-04-01/Accounts/{AccountSid}.json              (Auth Token, Main key)
                       GET  /2010-04-01/Accounts/{AccountSid}/Messages.json     (paged; none sent here)
                       GET  /2010-04-01/Accounts/{AccountSid}/Calls.json        (paged; none made here)
                       GET  /2010-04-01/Accounts/{AccountSid}/Keys.json     (paged)
                       POST /2010-04-01/Accounts/{AccountSid}/Keys.json     FriendlyName
                       GET|POST|DELETE /2010-04-01/Accounts/{AccountSid}/Keys/{Sid}.json
                       GET  /2010-04-01/Accounts/{AccountSid}/Usage/Records/Today.json
                                        (paged; Category)
                       GET  /2010-04-01/Accounts/{AccountSid}/Usage/Triggers.json
                                        (paged; Recurring, TriggerBy, UsageCategory)
                       POST /2010-04-01/Accounts/{AccountSid}/Usage/Triggers.json
                                        CallbackUrl, TriggerValue, UsageCategory,
                                        CallbackMethod?, FriendlyName?, Recurring?,
                                        TriggerBy?
                       GET|POST|DELETE /2010-04-01/Accounts/{AccountSid}/Usage/Triggers/{Sid}.json
                                        (POST: CallbackMethod, CallbackUrl, FriendlyName)
  iam.twilio.com       GET  /v1/Keys?AccountSid=AC..                        (paged)
                       POST /v1/Keys   AccountSid, FriendlyName, KeyType=restricted, Policy
                       GET|POST|DELETE /v1/Keys/{Sid}                       (POST: FriendlyName, Policy)
  accounts.twilio.com  POST|DELETE /v1/AuthTokens/Secondary
                       POST /v1/AuthTokens/Promote
  verify.twilio.com    POST /v2/Services/{ServiceSid}/Verifications         To, Channel
  oauth.twilio.com     POST /v2/token   grant_type=client_credentials, client_id,
                                        client_secret (twilio-python 9.13's
                                        ClientTokenManager; 200, as RFC 6749 §5.1)
                       POST /v1/token   GrantType, ClientId, ClientSecret
                                        (twilio_oauth_v1.json; 201)

Twilio's conventions kept here:
* HTTP Basic auth on every API route. Username: an Account SID (password its
  primary Auth Token, or its secondary while one exists) or an API Key SID
  (password its secret). Anything else is 401 {"code": 20003, "message":
  "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003",
  "status": 401}.
* Key types, always enforced (Twilio's "API keys" docs; there is no
  lenient mode): "main" (seeded only, as Twilio creates them only in the
  Console) may do everything an Auth Token may; "standard" keys, what
  POST /v1/Keys and the 2010 Keys create, may do everything except the
  Account resource (/Accounts/{sid}.json), the Keys endpoints (both APIs)
  and Auth Tokens: those answer 401 20003, as Twilio answers a Standard key
  on /Accounts or Keys; "restricted" keys may do only what their Policy
  allows ({"allow": ["/twilio/messaging/messages/read"]}), anything else
  401 70051 (Twilio's restricted-key refusal).
* Propagation: a key or secondary Auth Token created while a delay is set
  (POST /__fake/propagation) answers 401 20003 until that delay has passed
  since its creation, as a credential just made at Twilio may.
* OAuth 2.0 client credentials: an OAuth app (client_id "OQ" + 32 hex,
  client_secret, its account) exchanges its id and secret at the token
  endpoints (no Basic auth) for a bearer token: a JWT (HS256, signed with a
  key of this fake's own) whose payload has iss, sub (the client id),
  account_sid, iat, exp (now + the token lifetime, 3600 s unless set) and a
  jti. The answer is {"access_token", "refresh_token": null, "id_token":
  null, "token_type": "Bearer", "expires_in"} (the oauth.v1.token schema).
  A wrong or unknown client answers 401 20003, another grant_type 400.
  `Authorization: Bearer <token>` is accepted on every API route until the
  token's exp (not one second later), for the app's account, with what a
  Standard key may do (not the Account resource, Keys or Auth Tokens: 401
  20003). The strict reading: Twilio does not document OAuth tokens on
  those routes. A token stays valid until exp when the app's secret
  changes, as a signed JWT does.
* Request bodies are application/x-www-form-urlencoded; a body of another
  type is ignored, as Twilio does (so required parameters are missing).
* Errors are {"code", "message", "more_info", "status"}; 404 is 20404
  "The requested resource /path was not found".
* Dates: RFC 2822 ("Mon, 13 Jun 2016 22:50:08 +0000") where the spec says
  date-time-rfc-2822 (2010 API and iam /v1/Keys); ISO 8601
  ("2015-07-31T04:00:00Z") where it says date-time (accounts v1, verify v2).
* Key SIDs "SK" + 32 hex; secrets 32 alphanumerics, returned only by the
  create call; Auth Tokens 32 hex.
* Usage (api.v2010.account.usage.*): this fake keeps, per account and
  usage category, the cumulative count, usage and price of each usage day
  (set by POST /__fake/usage; Twilio's category hierarchy and totalprice
  are not derived: each category is what the test set). The usage day is
  today's UTC date at start and moves only forward, by the hook; a new
  day starts every Today at 0, as Twilio's Today does at midnight UTC. The
  usage clock (as_of, the trigger's date_fired) is the usage day at the
  real UTC time of day; a callback's DateFired is the real time. Today.json answers one record per category the test has set for
  the account (values of the usage day, 0 if none yet), sorted by
  category; with Category, that one record (zeros if never set). count
  and usage are strings, price a number, start_date/end_date the usage day
  (YYYY-MM-DD). A Category not in the spec's enum (USAGE_CATEGORIES) is
  400 20001, as are StartDate/EndDate (Today fixes both; not modelled, so
  refused). Usage Triggers ("UT" + 32 hex) keep trigger_value a string
  ("+N": the watched value now plus N; TriggerBy=count takes whole numbers
  only, the strict reading); Recurring omitted (or empty) is a
  non-recurring trigger, which fires once ever like "alltime" and is
  answered as "alltime" (the spec's enum has no empty value and is not
  nullable; Twilio's list filter reads "alltime" and empty alike) while
  its callbacks send Recurring="". CallbackUrl must be an absolute http(s)
  URL without user:password (refused: signing such URLs is not modelled).
  An update taking TriggerValue, UsageCategory, Recurring or TriggerBy is
  refused (400 20001; the spec has only CallbackMethod, CallbackUrl and
  FriendlyName, and a silently ignored change would hide a client bug).
  The watched value is the usage day's (daily), the month's, the year's or
  all history's (monthly, yearly, alltime/non-recurring) sum of the field
  named by trigger_by; current_value is that value, live. After each change
  by the hook, a trigger whose watched value is >= trigger_value and that
  has not fired in its period (the day, month, year; ever) fires once: a
  background request to callback_url (POST form, or GET query string) with
  AccountSid, UsageTriggerSid, DateFired (RFC 2822), Recurring,
  UsageCategory, TriggerBy, TriggerValue, CurrentValue, UsageRecordUri and
  IdempotencyToken, signed X-Twilio-Signature = base64(HMAC-SHA1(the
  account's primary Auth Token, URL + for POST each param name then value,
  sorted by name)); for GET the URL holds the query string and no params
  follow. No redirect is followed, nothing is retried; every attempt is in
  GET /__fake/state "trigger_callbacks" (pending while in flight).
  Permissions: Auth Tokens, Main and Standard keys (and bearer tokens) may
  use them all; a restricted key needs /twilio/usage/records/read, or
  /twilio/usage/triggers/read (list, fetch), .../create, .../update or
  .../delete. The strict reading: Twilio's restricted-key docs list no
  Usage permissions at all, so these names are this fake's own and each
  grants exactly one action (create does not grant update).

Usage:
  twilio_fake.py [--port 0] [--host 127.0.0.1] [--state FILE] [--seed FILE]
                 [--absolute-uris]

  --port 0 picks a free port; the first stdout line is PORT=<n> (flushed).
  --state FILE: loaded at start, rewritten (mode 0600, atomically) after every
    change, so a killed and restarted fake keeps accounts, keys, tokens,
    services, usage (values and day) and usage triggers. Counters, the
    trigger callback log and injected failures are not persisted.
  --seed FILE: JSON {"accounts": [{"sid", "auth_token", "friendly_name"?}],
    "keys": [{"account_sid", "sid", "secret", "friendly_name"?, "type"?,
    "policy"?}], "services": [{"sid", "account_sid", "friendly_name"?}],
    "oauth_apps": [{"account_sid", "client_id", "client_secret"}]};
    entries already in the state are kept as they are.
  The 2010 list envelope's uri/first_page_uri/previous_page_uri/
    next_page_uri are relative ("/2010-04-01/..."), as Twilio sends them
    (its paging docs show them so; the OpenAPI document says `format: uri`,
    which tests/support/prism.sh relaxes to uri-reference for those four
    fields only). --absolute-uris sends "https://api.twilio.com/..." instead.
    Clients take only path and query from these and join them to their
    configured base URL.

Nothing secret is ever printed: the request log on stderr has method, path,
status and the username (a SID) only.

Test hooks (no auth), under /__fake/:
  POST /__fake/accounts {"sid", "auth_token"?, "friendly_name"?}
       seed (or replace) an account; a missing auth_token is generated and
       returned in the answer {"sid", "auth_token"}
  POST /__fake/keys {"account_sid", "sid"?, "secret"?, "friendly_name"?,
       "type": "main"|"standard"|"restricted" (default main), "policy"?}
       seed a key; the answer has sid and secret
  POST /__fake/services {"sid"?, "account_sid", "friendly_name"?}
       seed a Verify service (VA...); the answer has its sid
  POST /__fake/oauth_apps {"account_sid", "client_id"?, "client_secret"?}
       seed (or replace: a new secret) an OAuth app; the answer has
       client_id and client_secret
  POST /__fake/oauth {"ttl": N}
       bearer tokens issued from now on live N seconds (default 3600)
  GET  /__fake/state   accounts (sid, friendly_name, status, has_secondary),
       keys (sid, account_sid, friendly_name, type, policy, dates), services,
       verifications, counters, usage_day, usage ({account: {category:
       {count, usage, price, day}}}, the usage day's values), usage_triggers
       (each as the API answers it, plus account_sid and fired_period),
       trigger_callbacks ([{trigger_sid, account_sid, url, method,
       idempotency_token, time, pending, status, error}]: status the HTTP
       status answered, or null with error set); never a secret
  POST /__fake/usage {"account_sid", "category", "count"?, "usage"?, "price"?}
       set the usage day's cumulative values of that category (count or
       usage given: the other defaults to it; price defaults to 0); or
       {"account_sid", "category", "add": N}: add N to count and usage.
       The answer is the usage record as Today.json answers it. Triggers
       of that account and category then fire as described above.
  POST /__fake/usage {"date": "YYYY-MM-DD"}
       set the usage day (only forward: time does not run back at Twilio);
       every Today starts again at 0. May be combined with the above (the
       day is set first); alone it answers {"date"}
  GET  /__fake/requests  the last 1000 API requests: method, path, route,
       status, username (SID) — never a password
  POST /__fake/propagation {"seconds": N}
       keys and secondary Auth Tokens created from now on answer 401 20003
       for N seconds after their creation (0: at once, the default);
       -1: never (a credential that never starts working);
       "release": true also makes every credential still waiting work now
  POST /__fake/keys {"count": N, "account_sid", "friendly_name"?, "type"?}
       with "count": seed N keys at once (for paging tests)
  POST /__fake/check {"username", "password"} -> {"valid": bool,
       "type": "auth_token_primary"|"auth_token_secondary"|"main"|
       "standard"|"restricted"|null}
  POST /__fake/fail {"path_prefix", "status", "count", "method"?, "code"?,
       "message"?, "retry_after"?, "after"?}
       the next `count` API requests whose path starts with path_prefix
       (and whose method is `method`, if given) answer `status` with Twilio's
       error JSON (429 20429, 500 20500, 503 20503, 401 20003, ...);
       with "after": true the request is carried out first and only its
       answer is lost (a key created whose answer never arrives);
       count 0 removes the rules for that prefix
  POST /__fake/delay {"path_prefix", "seconds", "count", "method"?}
       the next `count` API requests whose path starts with path_prefix
       wait `seconds` before they are carried out (a slow Twilio; a large
       `seconds`, an answer that never comes); other requests are served
       meanwhile, and GET /__fake/state counts those waiting
       ("requests_held")
  POST /__fake/corrupt {"path_prefix", "count", "method"?, "status"?,
       "set"?: {field: value}, "drop"?: [field]}
       break the next `count` successful JSON answers (to prove that Prism
       catches a response that violates the spec); a field may be a dotted
       path into the body ("usage_records.0.count": item 0's count)
  POST /__fake/reset   forget everything (accounts, keys, services, tokens,
       usage, the usage day, usage triggers, callbacks, counters, failures);
       rewrites the state file
  POST /__fake/reset-counters
"""

from __future__ import annotations

import argparse
import base64
import calendar
import copy
import datetime
import email.utils
import hmac
import json
import os
import re
import secrets
import signal
import string
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

API_BASE = "https://api.twilio.com"
IAM_BASE = "https://iam.twilio.com"
ACCOUNTS_BASE = "https://accounts.twilio.com"
VERIFY_BASE = "https://verify.twilio.com"

ACCOUNT_SID_RE = re.compile(r"^AC[0-9a-fA-F]{32}$")
KEY_SID_RE = re.compile(r"^SK[0-9a-fA-F]{32}$")
SERVICE_SID_RE = re.compile(r"^VA[0-9a-fA-F]{32}$")
CLIENT_ID_RE = re.compile(r"^OQ[0-9a-fA-F]{32}$")
OAUTH_ISSUER = "https://oauth.twilio.com"
E164_RE = re.compile(r"^\+[1-9]\d{6,14}$")

KEY_TYPES = ("main", "standard", "restricted")
MAX_FRIENDLY_NAME = 64  # "It can be up to 64 characters long." (iam v1 spec)
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

# Restricted-key permission of each route a restricted key may ever use.
# Key, Auth Token and Account routes have none: only Auth Tokens and Main
# keys may use them.
PERM_VERIFICATION_CREATE = "/twilio/verify/services/verifications/create"
PERM_MESSAGES_READ = "/twilio/messaging/messages/read"
PERM_CALLS_READ = "/twilio/voice/calls/read"
# Not in Twilio's restricted-key docs (which list no Usage permissions):
# this fake's own names, one action each (see the module docstring).
PERM_USAGE_RECORDS_READ = "/twilio/usage/records/read"
PERM_USAGE_TRIGGERS_READ = "/twilio/usage/triggers/read"
PERM_USAGE_TRIGGERS_CREATE = "/twilio/usage/triggers/create"
PERM_USAGE_TRIGGERS_UPDATE = "/twilio/usage/triggers/update"
PERM_USAGE_TRIGGERS_DELETE = "/twilio/usage/triggers/delete"

TRIGGER_SID_RE = re.compile(r"^UT[0-9a-fA-F]{32}$")
CATEGORY_RE = re.compile(r"^[a-z0-9-]+$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# TriggerValue: a positive number; "+N" is an offset from the value now.
TRIGGER_VALUE_RE = re.compile(r"^(\+)?(\d+(?:\.\d+)?)$")
RECURRING = ("daily", "monthly", "yearly", "alltime")
TRIGGER_BY = ("count", "usage", "price")
CALLBACK_METHODS = ("GET", "POST")
CALLBACK_TIMEOUT = 15  # seconds, as Twilio waits for a webhook
# Today.json's subresource_uris: key -> path segment.
USAGE_SUBRESOURCES = {
    "all_time": "AllTime", "daily": "Daily", "last_month": "LastMonth",
    "monthly": "Monthly", "this_month": "ThisMonth", "today": "Today",
    "yearly": "Yearly", "yesterday": "Yesterday",
}

# The usage categories of twilio_api_v2010.json (@twilio-alpha/mcp 0.7.0):
# usage_record_today_enum_category, identical to
# usage_trigger_enum_usage_category. Any other is refused (400 20001).
USAGE_CATEGORIES = frozenset("""
    a2p-10dlc-registrationfees-brandregistration a2p-10dlc-registrationfees-bv
    a2p-10dlc-registrationfees-campaigncharges a2p-10dlc-registrationfees-campaignregistration
    a2p-10dlc-registrationfees-campaignvetting a2p-10dlc-registrationfees-monthly
    a2p-10dlc-registrationfees-onetime a2p-registration-fees account-security agent-conference
    agent-copilot agent-copilot-messages agent-copilot-participant-minutes ai-assistants
    ai-assistants-voice amazon-polly answering-machine-detection assets audience-minutes
    audience-minutes-audio authy-authentications authy-calls-outbound
    authy-email-authentications authy-monthly-fees authy-outbound-email authy-phone-intelligence
    authy-phone-verifications authy-sms-outbound authy-verify-email-verifications
    authy-verify-outbound-email autopilot autopilot-home-assistants autopilot-messaging
    autopilot-other autopilot-voice basic-peer-to-peer-rooms-participant-minutes branded-calling
    bundle-sms-bucket bundle-subscription-fees call-forwarding-lookups call-progess-events
    calleridlookups calls calls-client calls-emergency calls-globalconference calls-inbound
    calls-inbound-local calls-inbound-mobile calls-inbound-tollfree calls-inbound-tollfree-local
    calls-inbound-tollfree-mobile calls-media-stream-minutes calls-outbound
    calls-pay-verb-transactions calls-recordings calls-sip calls-sip-inbound calls-sip-outbound
    calls-text-to-speech calls-transfers carrier-lookups category channels channels-messaging
    channels-messaging-inbound channels-messaging-outbound channels-whatsapp
    channels-whatsapp-conversation-authentication channels-whatsapp-conversation-free
    channels-whatsapp-conversation-marketing channels-whatsapp-conversation-service
    channels-whatsapp-conversation-utility channels-whatsapp-inbound channels-whatsapp-outbound
    chat-virtual-agent conversation-relay conversations conversations-api-requests
    conversations-conversation-events conversations-endpoint-connectivity conversations-events
    conversations-participant-events conversations-participants cps credit-transfer email
    emerging-tech engagement-suite-packaged-plans enhanced-line-type-lookups enterprise events
    experiment-france-sms experiment-india-sms experiment-uk-sms failed-message-processing-fee
    flex flex-active-user-hours flex-concurrent-users flex-conversational-insights
    flex-conversational-insights-messages flex-conversational-insights-voice-minutes
    flex-email-usage flex-messaging-usage flex-partner-spinsci flex-partner-xcelerate
    flex-reseller-ecosystem flex-unique-user flex-usage flex-users flex-voice-minute flex-ytica
    fraud-lookups frontline frontline-users functions generic-pay-transactions group-rooms
    group-rooms-data-track group-rooms-encrypted-media-recorded group-rooms-media-downloaded
    group-rooms-media-recorded group-rooms-media-routed group-rooms-media-stored
    group-rooms-participant-minutes group-rooms-recorded-minutes ip-messaging
    ip-messaging-commands ip-messaging-data-storage ip-messaging-data-transfer
    ip-messaging-endpoint-connectivity ivr-virtual-agent-custom-voices ivr-virtual-agent-genai
    line-status-lookups live-activity-lookups lookup-bucket-adjustment lookup-identity-match
    lookups marketplace marketplace-algorithmia-named-entity-recognition
    marketplace-cadence-transcription marketplace-cadence-translation
    marketplace-capio-speech-to-text marketplace-convriza-ababa
    marketplace-deepgram-phrase-detector marketplace-deepgram-transcription
    marketplace-deepgram-transcription-base marketplace-deepgram-transscription-enhanced
    marketplace-digital-segment-business-info marketplace-facebook-offline-conversions
    marketplace-google-speech-to-text marketplace-ibm-watson-message-insights
    marketplace-ibm-watson-message-sentiment marketplace-ibm-watson-recording-analysis
    marketplace-ibm-watson-tone-analyzer marketplace-icehook-systems-scout
    marketplace-infogroup-dataaxle-bizinfo marketplace-keen-io-contact-center-analytics
    marketplace-marchex-cleancall marketplace-marchex-recording-analysis
    marketplace-marchex-sentiment-analysis-for-sms marketplace-marketplace-nextcaller-social-id
    marketplace-mobile-commons-opt-out-classifier marketplace-nexiwave-voicemail-to-text
    marketplace-nextcaller-advanced-caller-identification marketplace-nomorobo-spam-score
    marketplace-pay-addons marketplace-pay-addons-basecommerce-pay-connector
    marketplace-pay-addons-braintree-pay-connector
    marketplace-pay-addons-cardconnect-pay-connector marketplace-pay-addons-chase-pay-connector
    marketplace-pay-addons-shuttle-pay-connector marketplace-pay-addons-stripe-pay-connector
    marketplace-payfone-tcpa-compliance marketplace-poly-ai-connector
    marketplace-realphonevalidation marketplace-remeeting-automatic-speech-recognition
    marketplace-spoke-phone-license-pro marketplace-spoke-phone-license-standard
    marketplace-tcpa-defense-solutions-blacklist-feed marketplace-telo-opencnam
    marketplace-trestle-solutions-caller-identification marketplace-truecnam-true-spam
    marketplace-twilio-caller-name-lookup-us marketplace-twilio-carrier-information-lookup
    marketplace-voicebase-pci marketplace-voicebase-transcription
    marketplace-voicebase-transcription-custom-vocabulary
    marketplace-web-purify-profanity-filter marketplace-whitepages-pro-caller-identification
    marketplace-whitepages-pro-phone-intelligence marketplace-whitepages-pro-phone-reputation
    marketplace-wolfarm-spoken-results marketplace-wolfram-short-answer
    marketplace-ytica-contact-center-reporting-analytics
    marketplay-pay-addons-shuttle-pay-connector media-composer-minutes mediastorage
    min-spend-adjustments mms mms-inbound mms-inbound-longcode mms-inbound-shortcode
    mms-inbound-toll-free mms-messages-carrierfees mms-outbound mms-outbound-longcode
    mms-outbound-shortcode mms-outbound-tollfree monitor monitor-reads monitor-storage
    monitor-writes notify notify-actions-attempts notify-channels number-format-lookups pchat
    pchat-actions pchat-aps pchat-conv-med-storage pchat-messages pchat-notifications
    pchat-reads pchat-users peer-to-peer-rooms-participant-minutes pfax pfax-minutes
    pfax-minutes-inbound pfax-minutes-outbound pfax-pages phone-quality-score-lookups
    phonenumbers phonenumbers-cps phonenumbers-emergency phonenumbers-local phonenumbers-mobile
    phonenumbers-porting phonenumbers-setups phonenumbers-tollfree premiumsupport
    premiumsupport-percentage-spend programmablevoice-platform programmablevoiceconn-clientsdk
    programmablevoiceconn-clientsdk-inbound programmablevoiceconn-clientsdk-outbound
    programmablevoiceconn-onnet programmablevoiceconn-onnet-inbound
    programmablevoiceconn-onnet-outbound programmablevoiceconn-sip
    programmablevoiceconn-sip-inbound programmablevoiceconn-sip-outbound
    programmablevoiceconnectivity proxy proxy-active-sessions proxy-bucket-adjustment
    proxy-licenses pstnconnectivity pstnconnectivity-inbound pstnconnectivity-outbound pv
    pv-basic-rooms pv-composition-media-downloaded pv-composition-media-encrypted
    pv-composition-media-stored pv-composition-minutes pv-recording-compositions
    pv-room-participants pv-room-participants-au1 pv-room-participants-br1
    pv-room-participants-ie1 pv-room-participants-jp1 pv-room-participants-sg1
    pv-room-participants-us1 pv-room-participants-us2 pv-rooms pv-sip-endpoint-registrations
    rcs-messages reassigned-number recordings recordingstorage shortcodes
    shortcodes-customerowned shortcodes-mms-enablement shortcodes-mps shortcodes-random
    shortcodes-setup-fees shortcodes-uk shortcodes-vanity sim-swap-lookups sip-secure-media
    small-group-rooms small-group-rooms-data-track small-group-rooms-participant-minutes sms
    sms-inbound sms-inbound-longcode sms-inbound-shortcode sms-inbound-tollfree
    sms-messages-carrierfees sms-messages-features sms-messages-features-engagement-suite
    sms-messages-features-message-redaction sms-messages-features-senderid sms-mps
    sms-mps-shortcode sms-mps-tollfree sms-mps-tollfree-setup sms-national-regulatory-protection
    sms-outbound sms-outbound-content-inspection sms-outbound-longcode sms-outbound-shortcode
    sms-outbound-tollfree sms-pumping-protection sms-pumping-risk smsmessages-bucket-adjustments
    smsmessages-outbound-domestic speech-recognition studio-engagements sync sync-actions
    sync-endpoint-hours sync-endpoint-hours-above-daily-cap taskrouter-tasks totalprice
    transcriptions trunking-cps trunking-emergency-calls trunking-origination
    trunking-origination-local trunking-origination-mobile trunking-origination-tollfree
    trunking-recordings trunking-secure trunking-termination tts-google turnmegabytes
    turnmegabytes-australia turnmegabytes-brasil turnmegabytes-germany turnmegabytes-india
    turnmegabytes-ireland turnmegabytes-japan turnmegabytes-singapore turnmegabytes-useast
    turnmegabytes-uswest twilio-for-salesforce twilio-for-salesforce-licenses
    twilio-interconnect twiml usage-flex-video usage-functions usage-rcs-basic-messages-outbound
    usage-rcs-messages usage-rcs-messages-inbound usage-rcs-messaging-carrier-fees
    usage-rcs-single-messages-outbound verify-package-plans verify-push verify-sna verify-totp
    verify-voice-sms verify-whatsapp-conversations-business-initiated video-recordings
    video-rooms-turn-megabytes virtual-agent voice-insights
    voice-insights-client-insights-on-demand-minute
    voice-insights-ptsn-insights-on-demand-minute
    voice-insights-sip-interface-insights-on-demand-minute
    voice-insights-sip-trunking-insights-on-demand-minute voice-intelligence
    voice-intelligence-eip-operators voice-intelligence-operators
    voice-intelligence-transcription wds wireless wireless-data wireless-data-payg
    wireless-data-payg-africa wireless-data-payg-asia wireless-data-payg-centralandsouthamerica
    wireless-data-payg-europe wireless-data-payg-northamerica wireless-data-payg-oceania
    wireless-data-quota1 wireless-data-quota1-africa wireless-data-quota1-asia
    wireless-data-quota1-centralandsouthamerica wireless-data-quota1-europe
    wireless-data-quota1-northamerica wireless-data-quota1-oceania wireless-data-quota10
    wireless-data-quota10-africa wireless-data-quota10-asia
    wireless-data-quota10-centralandsouthamerica wireless-data-quota10-europe
    wireless-data-quota10-northamerica wireless-data-quota10-oceania wireless-data-quota50
    wireless-data-quota50-africa wireless-data-quota50-asia
    wireless-data-quota50-centralandsouthamerica wireless-data-quota50-europe
    wireless-data-quota50-northamerica wireless-data-quota50-oceania wireless-data-quotacustom
    wireless-data-quotacustom-africa wireless-data-quotacustom-asia
    wireless-data-quotacustom-centralandsouthamerica wireless-data-quotacustom-europe
    wireless-data-quotacustom-northamerica wireless-data-quotacustom-oceania wireless-mrc-payg
    wireless-mrc-quota1 wireless-mrc-quota10 wireless-mrc-quota50 wireless-mrc-quotacustom
    wireless-orders wireless-orders-artwork wireless-orders-bulk wireless-orders-esim
    wireless-orders-starter wireless-quotas wireless-sms-africa wireless-sms-asia
    wireless-sms-centralandsouthamerica wireless-sms-europe wireless-sms-northamerica
    wireless-sms-oceania wireless-super-sim wireless-super-sim-data
    wireless-super-sim-data-north-america-usa wireless-super-sim-data-payg
    wireless-super-sim-data-payg-europe wireless-super-sim-data-payg-north-america
    wireless-super-sim-hardware wireless-super-sim-hardware-bulk wireless-super-sim-smscommands
    wireless-super-sim-smscommands-africa wireless-super-sim-smscommands-asia
    wireless-super-sim-smscommands-cent-and-south-america wireless-super-sim-smscommands-europe
    wireless-super-sim-smscommands-north-america wireless-super-sim-smscommands-oceania
    wireless-super-sim-subscription wireless-super-sim-subscription-payg wireless-usage
    wireless-usage-commands wireless-usage-commands-africa wireless-usage-commands-asia
    wireless-usage-commands-centralandsouthamerica wireless-usage-commands-europe
    wireless-usage-commands-home wireless-usage-commands-northamerica
    wireless-usage-commands-oceania wireless-usage-commands-roaming wireless-usage-data
    wireless-usage-data-africa wireless-usage-data-asia
    wireless-usage-data-centralandsouthamerica wireless-usage-data-custom-additionalmb
    wireless-usage-data-custom-first5mb wireless-usage-data-domestic-roaming
    wireless-usage-data-europe wireless-usage-data-individual-additionalgb
    wireless-usage-data-individual-firstgb wireless-usage-data-international-roaming-canada
    wireless-usage-data-international-roaming-india
    wireless-usage-data-international-roaming-mexico wireless-usage-data-northamerica
    wireless-usage-data-oceania wireless-usage-data-pooled wireless-usage-data-pooled-downlink
    wireless-usage-data-pooled-uplink wireless-usage-mrc wireless-usage-mrc-custom
    wireless-usage-mrc-individual wireless-usage-mrc-pooled wireless-usage-mrc-suspended
    wireless-usage-sms wireless-usage-voice a2p-fast-track-onboarding advisory-services
    advisory-services-billed advisory-services-call-tracking advisory-services-data-services
    advisory-services-expenses advisory-services-sip-trunking assets-requests
    audience-minutes-video authy-bucket-adjustment authy-software calleridlookups-api
    calleridlookups-programmablevoice calleridlookups-trunking
    calls-trunking-inbound-tollfree-local calls-trunking-inbound-tollfree-mobile
    channels-whatsapp-conversation-free-1 conference conversational-insights
    conversational-insights-messages conversational-insights-voice-minutes demo
    demo-uc-script-test elastic-sip-trunking elastic-sip-trunking-call-transfers
    enterprise-hippa flex-named-users flex-spinsci flex-users-1
    flex-wfo-premium-speech-analytics flex-xcelerate functions-rollup imp-v1-usage
    ip-messaging-addons ivr ivr-conversational ivr-dtmf ivr-virtualagent live
    live-media-recording-minutes longcode-mps marketplace-analytics-addons
    marketplace-isv-addons marketplace-messaging-addons marketplace-phonenumbers-addons
    marketplace-recording-addons marketplace-virtualagent-addons
    marketplay-pay-addons-shuttle-pay-connector-1 marketplay-pay-addons-stripe-pay-connector
    mms-inbound-longcode-canada mms-inbound-longcode-unitedstates mms-outbound-longcode-canada
    mms-outbound-longcode-unitedstates mms-outbound-toll-free notify-chatappsandotherchannels
    notify-notifyservices notify-pushnotifications payment-gateway-connectors payment-solutions
    pchat-bucket-adjustment phonenumbers-numbers prog-voice-client-android
    prog-voice-client-android-inbound prog-voice-client-android-outbound prog-voice-client-ios
    prog-voice-client-ios-inbound prog-voice-client-ios-outbound prog-voice-client-sdk
    prog-voice-client-web prog-voice-client-web-inbound prog-voice-client-web-outbound
    programmablevoiceconnectivity-media-streams pstnconnectivity-byoc pstnconnectivity-emergency
    pstnconnectivity-minutes pstnconnectivity-minutes-1 pstnconnectivity-minutesinboundlocal
    pstnconnectivity-minutesinboundmobile pstnconnectivity-minutesinboundtollfree
    pstnconnectivity-minutesinboundtollfreelocal pstnconnectivity-minutesinboundtollfreemobile
    pv-room-hours pv-room-simultaneous-participant-connections pvideo-room-hours-au1
    pvideo-room-hours-br1 pvideo-room-hours-ie1 pvideo-room-hours-jp1 pvideo-room-hours-sg1
    pvideo-room-hours-us1 pvideo-room-hours-us2 recordings-encrypted short-code-setup-fees
    shortcodes-messages-inbound shortcodes-messages-outbound sms-messages-registrationfees
    sms-mms-penalty-fees sms-mms-penalty-fees-1 sms-pumping-protection-non-usca
    sms-pumping-protection-usca studio studio-monthly-fees supersim task-router
    task-router-workers test-quota-buckets test-uc-script-1 test-uc-script-demo-2 text-to-speech
    tme tts-basic twilio-editions twilio-interconnect-california
    twilio-interconnect-california-monthly twilio-interconnect-california-setup
    twilio-interconnect-frankfurt twilio-interconnect-frankfurt-mo
    twilio-interconnect-frankfurt-setup twilio-interconnect-london twilio-interconnect-london-mo
    twilio-interconnect-london-setup twilio-interconnect-sao-paulo
    twilio-interconnect-sao-paulo-monthly twilio-interconnect-sao-paulo-setup
    twilio-interconnect-singapore twilio-interconnect-singapore-mo
    twilio-interconnect-singapore-setup twilio-interconnect-sydney twilio-interconnect-sydney-mo
    twilio-interconnect-sydney-setup twilio-interconnect-tokyo twilio-interconnect-tokyo-mo
    twilio-interconnect-tokyo-setup twilio-interconnect-va twilio-interconnect-va-mo
    twilio-interconnect-va-setup twiml-verbs twiml-verbs-say
    usage-programmable-messaging-engagement-suite usage-programmable-messaging-fees-services
    verify-outbound-email verify-packaged-plans verify-silent-network-auth verify-voice-and-sms
    voice-insights-client-insights-monthy-commit wireless-data-payg-asia-afg
    wireless-multi-imsi-sim-commands wireless-multi-imsi-sim-commands-usa
    wireless-multi-imsi-sim-data wireless-multi-imsi-sim-data-eu28
    wireless-multi-imsi-sim-data-usa wireless-multi-imsi-sim-monthly-fees
    wireless-multi-imsi-sim-usage wireless-super-sim-data-north-america wireless-super-sim-usage
""".split())

ERROR_TEXT = {
    400: (20001, "Bad Request"),
    401: (20003, "Authenticate"),
    403: (20403, "Forbidden"),
    404: (20404, "Not Found"),
    405: (20004, "Method not allowed"),
    409: (20409, "Conflict"),
    429: (20429, "Too Many Requests"),
    500: (20500, "Internal Server Error"),
    502: (20502, "Bad Gateway"),
    503: (20503, "Service Unavailable"),
    504: (20504, "Gateway Timeout"),
}


# ---------------------------------------------------------------- helpers

def rfc2822(ts: float) -> str:
    """Twilio's 2010-style date: 'Mon, 13 Jun 2016 22:50:08 +0000'."""
    return email.utils.formatdate(int(ts), usegmt=False).replace("-0000", "+0000")


def iso8601(ts: float) -> str:
    """Twilio's v1/v2 date: '2015-07-31T04:00:00Z'."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts)))


def dec(value) -> Decimal | None:
    """A finite, non-negative Decimal of a JSON number or numeric string
    (never a bool), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return d if d.is_finite() and d >= 0 else None


def dec_str(d: Decimal) -> str:
    """'12', '1.5', never '1E+2' or '1.50'."""
    s = format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s or "0"


def dec_json(d: Decimal):
    """A JSON number: an int when whole, else a float."""
    return int(d) if d == d.to_integral_value() else float(d)


def category_units(category: str) -> tuple[str, str, str]:
    """(count_unit, usage_unit, description) of a usage category."""
    head, *rest = category.split("-")
    description = " ".join([head.upper() if head in ("sms", "mms") else head.capitalize(), *rest])
    if head in ("sms", "mms"):
        return "messages", "messages", description
    if head == "calls":
        return "calls", "minutes", description
    return "events", "events", description


def public_url(url: str) -> str:
    """scheme://host[:port]/path of a URL: what a log may show."""
    u = urlsplit(url)
    return f"{u.scheme}://{u.hostname or ''}{':' + str(u.port) if u.port else ''}{u.path}"


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def new_auth_token() -> str:
    return secrets.token_hex(16)


def new_key_secret() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(32))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def same(a: str, b: str | None) -> bool:
    if b is None:
        return False
    return hmac.compare_digest(a.encode(), b.encode())


class TwilioError(Exception):
    """An answer in Twilio's error JSON."""

    def __init__(self, status: int, code: int | None = None, message: str | None = None):
        super().__init__(status)
        dcode, dmsg = ERROR_TEXT.get(status, (20500 if status >= 500 else 20001, "Error"))
        self.status = status
        self.code = code if code is not None else dcode
        self.message = message if message is not None else dmsg

    def body(self) -> dict:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


def not_found(path: str) -> TwilioError:
    return TwilioError(404, 20404, f"The requested resource {path} was not found")


def unauthorized() -> TwilioError:
    return TwilioError(401, 20003, "Authenticate")


def outside_policy() -> TwilioError:
    return TwilioError(401, 70051, "Authorization Error: the API key's policy does not allow this request")


def missing_param(name: str) -> TwilioError:
    return TwilioError(400, 20001, f"Missing required parameter {name} in the post body")


def invalid_param(name: str, code: int = 20001) -> TwilioError:
    return TwilioError(400, code, f"Invalid parameter: {name}")


class FakeError(Exception):
    """An answer of the test hooks: {"error": msg}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ------------------------------------------------------------------- state

class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.RLock()
        self.held = 0  # requests waiting out a delay right now (kept by reset)
        self.clear()
        if args.state and os.path.exists(args.state):
            self.load()
        if args.seed:
            with open(args.seed, encoding="utf-8") as f:
                self.apply_seed(json.load(f))
            self.save()

    def clear(self):
        self.accounts: dict[str, dict] = {}
        self.keys: dict[str, dict] = {}  # insertion order = creation order
        self.services: dict[str, dict] = {}
        self.verifications: dict[str, dict] = {}
        self.oauth_apps: dict[str, dict] = {}  # client_id -> app
        self.oauth_ttl = 3600
        self.tokens_issued = 0
        # Signs this fake's bearer tokens; a restart (or reset) voids them.
        self.jwt_key = secrets.token_bytes(32)
        # usage[account][category][day] = {"count", "usage", "price"}
        # (decimal strings): each usage day's cumulative values.
        self.usage: dict[str, dict[str, dict[str, dict]]] = {}
        self.usage_day = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
        self.usage_triggers: dict[str, dict] = {}  # insertion order = creation order
        self.trigger_callbacks: list[dict] = []
        self.failures: list[dict] = []
        self.delays: list[dict] = []
        self.corruptions: list[dict] = []
        # seconds a credential created from now on takes to start working;
        # None: never
        self.propagation: float | None = 0.0
        self.reset_counters()

    def reset_counters(self):
        self.counters: dict[str, dict] = {}
        self.requests: list[dict] = []
        self.total = 0

    # -- persistence: secrets go to the state file (mode 0600) only
    def load(self):
        with open(self.args.state, encoding="utf-8") as f:
            doc = json.load(f)
        self.accounts = doc.get("accounts", {})
        self.keys = doc.get("keys", {})
        self.services = doc.get("services", {})
        self.verifications = doc.get("verifications", {})
        self.oauth_apps = doc.get("oauth_apps", {})
        self.usage = doc.get("usage", {})
        self.usage_day = doc.get("usage_day", self.usage_day)
        self.usage_triggers = doc.get("usage_triggers", {})

    def save(self):
        if not self.args.state:
            return
        doc = {
            "accounts": self.accounts,
            "keys": self.keys,
            "services": self.services,
            "verifications": self.verifications,
            "oauth_apps": self.oauth_apps,
            "usage": self.usage,
            "usage_day": self.usage_day,
            "usage_triggers": self.usage_triggers,
        }
        d = os.path.dirname(os.path.abspath(self.args.state))
        fd, tmp = tempfile.mkstemp(prefix=".twilio-fake-", dir=d)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.args.state)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def apply_seed(self, doc: dict):
        for a in doc.get("accounts", []):
            if a.get("sid") not in self.accounts:
                self.add_account(a)
        for k in doc.get("keys", []):
            if k.get("sid") not in self.keys:
                self.add_key(k)
        for s in doc.get("services", []):
            if s.get("sid") not in self.services:
                self.add_service(s)
        for o in doc.get("oauth_apps", []):
            if o.get("client_id") not in self.oauth_apps:
                self.add_oauth_app(o)

    # -- seeding (test hooks and --seed)
    def add_account(self, a: dict) -> dict:
        sid = a.get("sid")
        if not isinstance(sid, str) or not ACCOUNT_SID_RE.match(sid):
            raise FakeError(400, "sid must be AC + 32 hex digits")
        token = a.get("auth_token") or new_auth_token()
        if not isinstance(token, str):
            raise FakeError(400, "auth_token must be a string")
        now = time.time()
        self.accounts[sid] = {
            "sid": sid,
            "auth_token": token,
            "secondary_auth_token": None,
            "secondary_created": None,
            "friendly_name": a.get("friendly_name") or f"{sid[:8]}'s account",
            "status": a.get("status", "active"),
            "type": a.get("type", "Full"),
            "created": now,
            "updated": now,
        }
        return {"sid": sid, "auth_token": token}

    def add_key(self, k: dict) -> dict:
        acc = k.get("account_sid")
        if acc not in self.accounts:
            raise FakeError(400, "account_sid must name a seeded account")
        sid = k.get("sid") or new_sid("SK")
        if not isinstance(sid, str) or not KEY_SID_RE.match(sid):
            raise FakeError(400, "sid must be SK + 32 hex digits")
        secret = k.get("secret") or new_key_secret()
        ktype = k.get("type", "main")
        if ktype not in KEY_TYPES:
            raise FakeError(400, f"type must be one of {', '.join(KEY_TYPES)}")
        policy = k.get("policy")
        if ktype == "restricted":
            if isinstance(policy, str):
                policy = json.loads(policy)
            if not valid_policy(policy):
                raise FakeError(400, 'a restricted key needs a policy {"allow": [...]}')
        else:
            policy = None
        now = time.time()
        self.keys[sid] = {
            "sid": sid,
            "account_sid": acc,
            "secret": secret,
            "friendly_name": k.get("friendly_name", ""),
            "type": ktype,
            "policy": policy,
            "created": now,
            "updated": now,
            "valid_from": self.valid_from(now) if k.get("propagates") else now,
        }
        return {"sid": sid, "secret": secret}

    def valid_from(self, now: float) -> float:
        """When a credential created now starts working (inf: never)."""
        return float("inf") if self.propagation is None else now + self.propagation

    @staticmethod
    def working(valid_from) -> bool:
        return valid_from is None or time.time() >= valid_from

    def add_service(self, s: dict) -> dict:
        acc = s.get("account_sid")
        if acc not in self.accounts:
            raise FakeError(400, "account_sid must name a seeded account")
        sid = s.get("sid") or new_sid("VA")
        if not isinstance(sid, str) or not SERVICE_SID_RE.match(sid):
            raise FakeError(400, "sid must be VA + 32 hex digits")
        self.services[sid] = {
            "sid": sid,
            "account_sid": acc,
            "friendly_name": s.get("friendly_name", "credbroker test service"),
        }
        return {"sid": sid}

    def add_oauth_app(self, o: dict) -> dict:
        acc = o.get("account_sid")
        if acc not in self.accounts:
            raise FakeError(400, "account_sid must name a seeded account")
        client_id = o.get("client_id") or new_sid("OQ")
        if not isinstance(client_id, str) or not CLIENT_ID_RE.match(client_id):
            raise FakeError(400, "client_id must be OQ + 32 hex digits")
        secret = o.get("client_secret") or new_key_secret()
        if not isinstance(secret, str) or not secret:
            raise FakeError(400, "client_secret must be a non-empty string")
        self.oauth_apps[client_id] = {
            "client_id": client_id, "account_sid": acc, "client_secret": secret,
        }
        return {"client_id": client_id, "client_secret": secret}

    # -- OAuth bearer tokens
    def issue_token(self, app: dict) -> dict:
        now = int(time.time())
        header = {"alg": "HS256", "typ": "JWT"}
        payload = {
            "iss": OAUTH_ISSUER, "sub": app["client_id"], "account_sid": app["account_sid"],
            "iat": now, "exp": now + int(self.oauth_ttl), "jti": secrets.token_hex(16),
        }
        signing_input = b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + \
            b64url(json.dumps(payload, separators=(",", ":")).encode())
        sig = hmac.new(self.jwt_key, signing_input.encode(), "sha256").digest()
        self.tokens_issued += 1
        return {
            "access_token": signing_input + "." + b64url(sig),
            "refresh_token": None,
            "id_token": None,
            "token_type": "Bearer",
            "expires_in": int(self.oauth_ttl),
        }

    def bearer_principal(self, token: str) -> dict | None:
        """The principal of a bearer token this fake issued, until its exp."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        expected = hmac.new(self.jwt_key, (parts[0] + "." + parts[1]).encode(), "sha256").digest()
        try:
            if not hmac.compare_digest(b64url(expected), parts[2]):
                return None
            payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int):
            return None
        # Valid up to exp, not at it (RFC 7519: "on or after" exp is refused).
        if time.time() >= payload["exp"]:
            return None
        app = self.oauth_apps.get(payload.get("sub"))
        acc = self.accounts.get(payload.get("account_sid"))
        if not app or not acc or acc["status"] != "active":
            return None
        return {"account_sid": acc["sid"], "sid": app["client_id"], "type": "oauth"}

    # -- authentication
    def authenticate(self, username: str, password: str) -> dict | None:
        """The principal for a Basic credential, or None."""
        if username.startswith("AC"):
            acc = self.accounts.get(username)
            if not acc or acc["status"] != "active":
                return None
            if same(password, acc["auth_token"]):
                return {"account_sid": username, "sid": username, "type": "auth_token_primary"}
            if same(password, acc["secondary_auth_token"]) and self.working(
                    acc.get("secondary_valid_from")):
                return {"account_sid": username, "sid": username, "type": "auth_token_secondary"}
            return None
        if username.startswith("SK"):
            key = self.keys.get(username)
            if not key or not same(password, key["secret"]) or not self.working(
                    key.get("valid_from")):
                return None
            acc = self.accounts.get(key["account_sid"])
            if not acc or acc["status"] != "active":
                return None
            return {
                "account_sid": key["account_sid"],
                "sid": username,
                "type": key["type"],
                "policy": key["policy"],
            }
        return None

    # -- usage
    def usage_now(self) -> float:
        """The usage clock: the usage day at the real UTC time of day."""
        day = datetime.date.fromisoformat(self.usage_day)
        return calendar.timegm(day.timetuple()) + time.time() % 86400

    def usage_values(self, account_sid: str, category: str, day: str | None = None) -> dict:
        """{"count", "usage", "price"} (Decimals) of one usage day."""
        v = self.usage.get(account_sid, {}).get(category, {}).get(day or self.usage_day, {})
        return {f: Decimal(v.get(f, "0")) for f in ("count", "usage", "price")}

    @staticmethod
    def period(recurring: str, day: str) -> str:
        """The period a trigger fires at most once in: the day, month, year;
        ever for alltime and non-recurring triggers."""
        return {"daily": day, "monthly": day[:7], "yearly": day[:4]}.get(recurring, "ever")

    def watched(self, t: dict) -> Decimal:
        """The value a trigger watches now: its field summed over the usage
        days of its period."""
        days = self.usage.get(t["account_sid"], {}).get(t["usage_category"], {})
        now = self.period(t["recurring"], self.usage_day)
        return sum((Decimal(v.get(t["trigger_by"], "0")) for d, v in days.items()
                    if self.period(t["recurring"], d) == now), Decimal(0))

    def usage_record(self, account_sid: str, category: str) -> dict:
        """A usage_record_today resource."""
        v = self.usage_values(account_sid, category)
        count_unit, usage_unit, description = category_units(category)
        base = f"/2010-04-01/Accounts/{account_sid}/Usage/Records"
        day = self.usage_day
        return {
            "account_sid": account_sid,
            "api_version": "2010-04-01",
            "as_of": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(int(self.usage_now()))),
            "category": category,
            "count": dec_str(v["count"]),
            "count_unit": count_unit,
            "description": description,
            "end_date": day,
            "price": dec_json(v["price"]),
            "price_unit": "usd",
            "start_date": day,
            "subresource_uris": {
                k: f"{base}/{seg}.json?Category={category}" for k, seg in USAGE_SUBRESOURCES.items()
            },
            "uri": f"{base}/Today.json?Category={category}&StartDate={day}&EndDate={day}",
            "usage": dec_str(v["usage"]),
            "usage_unit": usage_unit,
        }

    def usage_trigger(self, t: dict) -> dict:
        """A usage_trigger resource (non-recurring answers "alltime": the
        spec's enum has no empty value and is not nullable)."""
        return {
            "account_sid": t["account_sid"],
            "api_version": "2010-04-01",
            "callback_method": t["callback_method"],
            "callback_url": t["callback_url"],
            "current_value": dec_str(self.watched(t)),
            "date_created": rfc2822(t["created"]),
            "date_fired": rfc2822(t["fired"]) if t.get("fired") is not None else None,
            "date_updated": rfc2822(t["updated"]),
            "friendly_name": t["friendly_name"],
            "recurring": t["recurring"] or "alltime",
            "sid": t["sid"],
            "trigger_by": t["trigger_by"],
            "trigger_value": t["trigger_value"],
            "uri": f"/2010-04-01/Accounts/{t['account_sid']}/Usage/Triggers/{t['sid']}.json",
            "usage_category": t["usage_category"],
            "usage_record_uri": (f"/2010-04-01/Accounts/{t['account_sid']}/Usage/Records.json"
                                 f"?Category={t['usage_category']}"),
        }

    def set_usage_day(self, day) -> None:
        if not isinstance(day, str) or not DATE_RE.match(day):
            raise FakeError(400, "date must be YYYY-MM-DD")
        try:
            datetime.date.fromisoformat(day)
        except ValueError:
            raise FakeError(400, "date must be a real YYYY-MM-DD date")
        if day < self.usage_day:
            raise FakeError(400, f"the usage day only moves forward (it is {self.usage_day})")
        self.usage_day = day

    def set_usage(self, doc: dict) -> list[dict]:
        """The POST /__fake/usage values change; the callbacks to make."""
        acc = doc.get("account_sid")
        if acc not in self.accounts:
            raise FakeError(400, "account_sid must name a seeded account")
        cat = doc.get("category")
        if not isinstance(cat, str) or cat not in USAGE_CATEGORIES:
            raise FakeError(400, "category must be one of the spec's usage categories")
        now = self.usage_values(acc, cat)
        if "add" in doc:
            if any(f in doc for f in ("count", "usage", "price")):
                raise FakeError(400, "add excludes count, usage and price")
            n = dec(doc["add"])
            if n is None or n != n.to_integral_value():
                raise FakeError(400, "add must be a whole number >= 0")
            new = {"count": now["count"] + n, "usage": now["usage"] + n, "price": now["price"]}
        else:
            got = {f: dec(doc[f]) for f in ("count", "usage", "price") if f in doc}
            if any(v is None for v in got.values()):
                raise FakeError(400, "count, usage and price must be numbers >= 0")
            if "count" not in got and "usage" not in got:
                raise FakeError(400, "count or usage (or add) is required")
            count = got.get("count", got.get("usage"))
            if count != count.to_integral_value():
                raise FakeError(400, "count must be a whole number")
            new = {"count": count, "usage": got.get("usage", count),
                   "price": got.get("price", Decimal(0))}
        days = self.usage.setdefault(acc, {}).setdefault(cat, {})
        days[self.usage_day] = {f: dec_str(v) for f, v in new.items()}
        return self.fire_triggers(acc, cat)

    def fire_triggers(self, account_sid: str, category: str) -> list[dict]:
        """Marks the triggers of that category that fire now; returns the
        callbacks to make (outside the lock)."""
        acc = self.accounts[account_sid]
        jobs = []
        for t in self.usage_triggers.values():
            if t["account_sid"] != account_sid or t["usage_category"] != category:
                continue
            period = self.period(t["recurring"], self.usage_day)
            current = self.watched(t)
            if t.get("fired_period") == period or current < Decimal(t["trigger_value"]):
                continue
            fired = self.usage_now()
            t["fired"] = fired
            t["fired_period"] = period
            params = {
                "AccountSid": account_sid,
                "UsageTriggerSid": t["sid"],
                # The real time: the daemon refuses callbacks fired long
                # ago or ahead of its clock (replays), whatever usage day
                # the test has moved to.
                "DateFired": rfc2822(time.time()),
                "Recurring": t["recurring"],
                "UsageCategory": category,
                "TriggerBy": t["trigger_by"],
                "TriggerValue": t["trigger_value"],
                "CurrentValue": dec_str(current),
                "UsageRecordUri": self.usage_trigger(t)["usage_record_uri"],
                "IdempotencyToken": f"{t['sid']}-{secrets.token_hex(16)}",
            }
            url = t["callback_url"]
            if t["callback_method"] == "GET":
                url += ("&" if urlsplit(url).query else ("" if url.endswith("?") else "?")) \
                    + urlencode(params)
                signed, body = url, None
            else:
                signed = url + "".join(k + params[k] for k in sorted(params))
                body = urlencode(params).encode()
            signature = base64.b64encode(
                hmac.new(acc["auth_token"].encode(), signed.encode(), "sha1").digest()).decode()
            entry = {
                "trigger_sid": t["sid"], "account_sid": account_sid,
                "url": t["callback_url"], "method": t["callback_method"],
                "idempotency_token": params["IdempotencyToken"], "time": time.time(),
                "pending": True, "status": None, "error": None,
            }
            self.trigger_callbacks.append(entry)
            jobs.append({"entry": entry, "url": url, "body": body, "signature": signature})
        return jobs

    def call_back(self, job: dict) -> None:
        """One trigger callback (a background thread): no redirect, no
        retry; the outcome goes to its trigger_callbacks entry."""
        entry = job["entry"]
        req = urllib.request.Request(job["url"], data=job["body"], method=entry["method"])
        req.add_header("X-Twilio-Signature", job["signature"])
        req.add_header("User-Agent", "TwilioProxy/1.1")
        if job["body"] is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        status, error = None, None
        try:
            with NO_REDIRECTS.open(req, timeout=CALLBACK_TIMEOUT) as answer:
                answer.read()
                status = answer.status
        except urllib.error.HTTPError as e:
            status = e.code
        except (OSError, ValueError) as e:
            # The kind of failure only: a message could echo the URL.
            reason = getattr(e, "reason", None)
            error = type(e).__name__ + (f": {type(reason).__name__}"
                                        if isinstance(reason, BaseException) else "")
        with self.lock:
            entry.update(pending=False, status=status, error=error)
        if status is None or not 200 <= status < 300:
            sys.stderr.write(f"twilio-fake: usage trigger {entry['trigger_sid']} callback "
                             f"{entry['method']} {public_url(entry['url'])} failed: "
                             f"{status if status is not None else error}\n")
            sys.stderr.flush()

    # -- views without secrets
    def public_state(self) -> dict:
        return {
            "accounts": [
                {
                    "sid": a["sid"],
                    "friendly_name": a["friendly_name"],
                    "status": a["status"],
                    "has_secondary": a["secondary_auth_token"] is not None,
                }
                for a in self.accounts.values()
            ],
            "keys": [
                {
                    "sid": k["sid"],
                    "account_sid": k["account_sid"],
                    "friendly_name": k["friendly_name"],
                    "type": k["type"],
                    "policy": k["policy"],
                    "date_created": iso8601(k["created"]),
                    "date_updated": iso8601(k["updated"]),
                }
                for k in self.keys.values()
            ],
            "services": list(self.services.values()),
            "verifications": len(self.verifications),
            "oauth_apps": [
                {"client_id": o["client_id"], "account_sid": o["account_sid"]}
                for o in self.oauth_apps.values()
            ],
            "usage_day": self.usage_day,
            "usage": {
                acc: {
                    cat: {"count": dec_str(v["count"]), "usage": dec_str(v["usage"]),
                          "price": dec_json(v["price"]), "day": self.usage_day}
                    for cat in cats
                    for v in [self.usage_values(acc, cat)]
                }
                for acc, cats in self.usage.items()
            },
            "usage_triggers": [
                {**self.usage_trigger(t), "fired_period": t.get("fired_period")}
                for t in self.usage_triggers.values()
            ],
            "trigger_callbacks": [dict(c) for c in self.trigger_callbacks],
            "oauth_ttl": self.oauth_ttl,
            "tokens_issued": self.tokens_issued,
            "counters": self.counters,
            "requests_total": self.total,
            "requests_held": self.held,
            "failures_pending": [
                {k: v for k, v in f.items()} for f in self.failures
            ],
        }


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx is the answer (urllib raises it as an HTTPError)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


# Straight to the callback URL, as Twilio calls it: no redirect followed,
# no proxy from the environment.
NO_REDIRECTS = urllib.request.build_opener(_NoRedirect, urllib.request.ProxyHandler({}))


def valid_policy(policy) -> bool:
    return (
        isinstance(policy, dict)
        and isinstance(policy.get("allow"), list)
        and all(isinstance(p, str) for p in policy["allow"])
        and all(isinstance(p, str) for p in policy.get("deny", []) or [])
    )


# ------------------------------------------------------------------ routes

class Route:
    def __init__(self, method: str, template: str, handler, admin: bool, perm: str | None = None,
                 public: bool = False):
        self.method = method
        # public: no Authorization (the OAuth token endpoints).
        self.public = public
        self.template = template
        self.handler = handler
        # admin: only an Auth Token or a Main key may call it.
        self.admin = admin
        self.perm = perm
        pat = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+?)", re.escape(template))
        self.regex = re.compile("^" + pat + "$")


class Api:
    """The Twilio routes. Each handler gets (state, principal, params,
    form, path, query) and returns (status, body|None)."""

    def __init__(self, args):
        self.args = args
        R = Route
        self.routes = [
            # The Account resource: Auth Tokens and Main keys only.
            R("GET", "/2010-04-01/Accounts/{Sid}.json", self.fetch_account, admin=True),
            R("GET", "/2010-04-01/Accounts/{AccountSid}/Messages.json", self.list_messages,
              admin=False, perm=PERM_MESSAGES_READ),
            R("GET", "/2010-04-01/Accounts/{AccountSid}/Calls.json", self.list_calls,
              admin=False, perm=PERM_CALLS_READ),
            R("GET", "/2010-04-01/Accounts/{AccountSid}/Keys.json", self.list_keys_2010, admin=True),
            R("POST", "/2010-04-01/Accounts/{AccountSid}/Keys.json", self.create_key_2010, admin=True),
            R("GET", "/2010-04-01/Accounts/{AccountSid}/Keys/{Sid}.json", self.fetch_key_2010, admin=True),
            R("POST", "/2010-04-01/Accounts/{AccountSid}/Keys/{Sid}.json", self.update_key_2010, admin=True),
            R("DELETE", "/2010-04-01/Accounts/{AccountSid}/Keys/{Sid}.json", self.delete_key_2010, admin=True),
            R("GET", "/2010-04-01/Accounts/{AccountSid}/Usage/Records/Today.json",
              self.list_usage_today, admin=False, perm=PERM_USAGE_RECORDS_READ),
            R("GET", "/2010-04-01/Accounts/{AccountSid}/Usage/Triggers.json",
              self.list_usage_triggers, admin=False, perm=PERM_USAGE_TRIGGERS_READ),
            R("POST", "/2010-04-01/Accounts/{AccountSid}/Usage/Triggers.json",
              self.create_usage_trigger, admin=False, perm=PERM_USAGE_TRIGGERS_CREATE),
            R("GET", "/2010-04-01/Accounts/{AccountSid}/Usage/Triggers/{Sid}.json",
              self.fetch_usage_trigger, admin=False, perm=PERM_USAGE_TRIGGERS_READ),
            R("POST", "/2010-04-01/Accounts/{AccountSid}/Usage/Triggers/{Sid}.json",
              self.update_usage_trigger, admin=False, perm=PERM_USAGE_TRIGGERS_UPDATE),
            R("DELETE", "/2010-04-01/Accounts/{AccountSid}/Usage/Triggers/{Sid}.json",
              self.delete_usage_trigger, admin=False, perm=PERM_USAGE_TRIGGERS_DELETE),
            R("GET", "/v1/Keys", self.list_keys_v1, admin=True),
            R("POST", "/v1/Keys", self.create_key_v1, admin=True),
            R("GET", "/v1/Keys/{Sid}", self.fetch_key_v1, admin=True),
            R("POST", "/v1/Keys/{Sid}", self.update_key_v1, admin=True),
            R("DELETE", "/v1/Keys/{Sid}", self.delete_key_v1, admin=True),
            R("POST", "/v1/AuthTokens/Secondary", self.create_secondary, admin=True),
            R("DELETE", "/v1/AuthTokens/Secondary", self.delete_secondary, admin=True),
            R("POST", "/v1/AuthTokens/Promote", self.promote, admin=True),
            R("POST", "/v2/Services/{ServiceSid}/Verifications", self.create_verification,
              admin=False, perm=PERM_VERIFICATION_CREATE),
            R("POST", "/v2/token", self.create_token_v2, admin=False, public=True),
            R("POST", "/v1/token", self.create_token_v1, admin=False, public=True),
        ]

    def match(self, method: str, path: str):
        """(route, params) or raises 404/405."""
        allowed = False
        for r in self.routes:
            m = r.regex.match(path)
            if m:
                if r.method == method:
                    return r, m.groupdict()
                allowed = True
        if allowed:
            raise TwilioError(405, 20004, "Method not allowed")
        raise not_found(path)

    @staticmethod
    def authorize(route: Route, principal: dict):
        t = principal["type"]
        if t in ("auth_token_primary", "auth_token_secondary", "main"):
            return
        if t == "restricted":
            allow = (principal.get("policy") or {}).get("allow", [])
            deny = (principal.get("policy") or {}).get("deny", []) or []
            if route.perm and route.perm in allow and route.perm not in deny:
                return
            raise outside_policy()
        # standard key (and OAuth bearer token): everything but the Account
        # resource, Keys and Auth Tokens
        if route.admin:
            raise unauthorized()

    # -- shared pieces
    @staticmethod
    def own_account(state: State, principal: dict, account_sid: str) -> dict:
        """The account a path names; a credential of another account is
        refused with 20003, as Twilio does."""
        if account_sid != principal["account_sid"]:
            raise unauthorized()
        return state.accounts[account_sid]

    @staticmethod
    def friendly_name(form: dict, default: str | None) -> str | None:
        if "FriendlyName" not in form:
            return default
        name = form["FriendlyName"]
        if len(name) > MAX_FRIENDLY_NAME:
            raise TwilioError(
                400, 20001,
                f"FriendlyName must be at most {MAX_FRIENDLY_NAME} characters long")
        return name

    @staticmethod
    def page_args(query: dict, items: list[dict]):
        """Twilio paging: PageSize (1..1000, default 50), Page (for client
        state), PageToken (PA + the last SID of the previous page, PB + the
        first SID of the next one)."""
        try:
            size = int(query.get("PageSize", DEFAULT_PAGE_SIZE))
            page = int(query.get("Page", 0))
        except ValueError:
            raise TwilioError(400, 20001, "Invalid paging parameters")
        if not 1 <= size <= MAX_PAGE_SIZE or page < 0:
            raise TwilioError(400, 20001, "Invalid paging parameters")
        token = query.get("PageToken")
        start = page * size
        if token:
            # PA<sid>: the page after that SID; PB<sid>: the page before it.
            if token[:2] not in ("PA", "PB"):
                raise TwilioError(400, 20001, "Invalid PageToken")
            sids = [i["sid"] for i in items]
            ref = token[2:]
            if token.startswith("PA"):
                start = sids.index(ref) + 1 if ref in sids else len(items)
            else:
                start = max(0, sids.index(ref) - size) if ref in sids else 0
        chunk = items[start:start + size]
        more = start + size < len(items)
        next_token = "PA" + chunk[-1]["sid"] if more and chunk else None
        return page, size, start, chunk, next_token

    # -- accounts
    def fetch_account(self, state, principal, p, form, path, query):
        acc = self.own_account(state, principal, p["Sid"])
        sid = acc["sid"]
        base = f"/2010-04-01/Accounts/{sid}"
        subs = ["addresses", "conferences", "signing_keys", "transcriptions",
                "connect_apps", "sip", "authorized_connect_apps", "usage", "keys",
                "applications", "recordings", "short_codes", "calls", "notifications",
                "incoming_phone_numbers", "queues", "messages",
                "outgoing_caller_ids", "available_phone_numbers", "balance"]
        names = {
            "signing_keys": "SigningKeys", "connect_apps": "ConnectApps", "sip": "SIP",
            "authorized_connect_apps": "AuthorizedConnectApps",
            "short_codes": "SMS/ShortCodes",
            "incoming_phone_numbers": "IncomingPhoneNumbers",
            "outgoing_caller_ids": "OutgoingCallerIds",
            "available_phone_numbers": "AvailablePhoneNumbers",
        }
        body = {
            "auth_token": acc["auth_token"],
            "date_created": rfc2822(acc["created"]),
            "date_updated": rfc2822(acc["updated"]),
            "friendly_name": acc["friendly_name"],
            "owner_account_sid": sid,
            "sid": sid,
            "status": acc["status"],
            "subresource_uris": {
                s: f"{base}/{names.get(s, s.capitalize())}.json" for s in subs
            },
            "type": acc["type"],
            "uri": f"{base}.json",
        }
        return 200, body

    def empty_list_2010(self, key, path, query):
        """A 2010 list envelope with no items (this fake sends no messages
        and makes no calls): what a test read gets."""
        page, size, start, chunk, _ = self.page_args(query, [])
        base = API_BASE if self.args.absolute_uris else ""

        def uri(**kw):
            return f"{base}{path}?" + urlencode({"PageSize": size, **kw})

        return 200, {
            key: [],
            "end": 0,
            "first_page_uri": uri(Page=0),
            "next_page_uri": None,
            "page": page,
            "page_size": size,
            "previous_page_uri": None,
            "start": start,
            "uri": uri(Page=page),
        }

    def list_messages(self, state, principal, p, form, path, query):
        self.own_account(state, principal, p["AccountSid"])
        return self.empty_list_2010("messages", path, query)

    def list_calls(self, state, principal, p, form, path, query):
        self.own_account(state, principal, p["AccountSid"])
        return self.empty_list_2010("calls", path, query)

    # -- keys, 2010 API
    @staticmethod
    def key_2010(k: dict, secret: bool = False) -> dict:
        body = {
            "sid": k["sid"],
            "friendly_name": k["friendly_name"],
            "date_created": rfc2822(k["created"]),
            "date_updated": rfc2822(k["updated"]),
        }
        if secret:
            body["secret"] = k["secret"]
        return body

    def account_keys(self, state, account_sid):
        return [k for k in state.keys.values() if k["account_sid"] == account_sid]

    def find_key(self, state, account_sid, sid, path) -> dict:
        k = state.keys.get(sid)
        if not k or k["account_sid"] != account_sid:
            raise not_found(path)
        return k

    def list_keys_2010(self, state, principal, p, form, path, query):
        acc = self.own_account(state, principal, p["AccountSid"])
        items = self.account_keys(state, acc["sid"])
        return 200, self.list_2010("keys", items, self.key_2010, path, query)

    def list_2010(self, key, items, render, path, query, filters=None) -> dict:
        """A 2010 list envelope of `items` (each with a "sid" for the page
        tokens), paged; `filters` are the query parameters the uris keep."""
        page, size, start, chunk, next_token = self.page_args(query, items)
        base = API_BASE if self.args.absolute_uris else ""

        def uri(**kw):
            return f"{base}{path}?" + urlencode({**(filters or {}), "PageSize": size, **kw})

        body = {
            key: [render(k) for k in chunk],
            "end": start + len(chunk) - 1 if chunk else 0,
            "first_page_uri": uri(Page=0),
            "next_page_uri": uri(Page=page + 1, PageToken=next_token) if next_token else None,
            "page": page,
            "page_size": size,
            "previous_page_uri": (
                uri(Page=page - 1, PageToken="PB" + chunk[0]["sid"]) if page > 0 and chunk else None
            ),
            "start": start,
            "uri": uri(Page=page, **({"PageToken": query["PageToken"]} if query.get("PageToken") else {})),
        }
        return body

    def create_key_2010(self, state, principal, p, form, path, query):
        acc = self.own_account(state, principal, p["AccountSid"])
        name = self.friendly_name(form, "")
        k = state.keys[state.add_key({"account_sid": acc["sid"], "type": "standard",
                                      "friendly_name": name, "propagates": True})["sid"]]
        return 201, self.key_2010(k, secret=True)

    def fetch_key_2010(self, state, principal, p, form, path, query):
        acc = self.own_account(state, principal, p["AccountSid"])
        return 200, self.key_2010(self.find_key(state, acc["sid"], p["Sid"], path))

    def update_key_2010(self, state, principal, p, form, path, query):
        acc = self.own_account(state, principal, p["AccountSid"])
        k = self.find_key(state, acc["sid"], p["Sid"], path)
        k["friendly_name"] = self.friendly_name(form, k["friendly_name"])
        k["updated"] = time.time()
        return 200, self.key_2010(k)

    def delete_key_2010(self, state, principal, p, form, path, query):
        acc = self.own_account(state, principal, p["AccountSid"])
        k = self.find_key(state, acc["sid"], p["Sid"], path)
        del state.keys[k["sid"]]
        return 204, None

    # -- usage, 2010 API
    @staticmethod
    def category_param(value: str, name: str) -> str:
        if not CATEGORY_RE.match(value) or value not in USAGE_CATEGORIES:
            raise invalid_param(name)
        return value

    def list_usage_today(self, state, principal, p, form, path, query):
        acc = self.own_account(state, principal, p["AccountSid"])
        for name in ("StartDate", "EndDate"):
            if name in query:
                raise TwilioError(400, 20001, f"{name} is not supported on Today by this fake")
        if query.get("IncludeSubaccounts", "true") not in ("true", "false"):
            raise invalid_param("IncludeSubaccounts")
        filters = {}
        if "Category" in query:
            cats = [self.category_param(query["Category"], "Category")]
            filters["Category"] = cats[0]
        else:
            cats = sorted(state.usage.get(acc["sid"], {}))
        items = [{"sid": c} for c in cats]
        return 200, self.list_2010("usage_records", items,
                                   lambda i: state.usage_record(acc["sid"], i["sid"]),
                                   path, query, filters)

    @staticmethod
    def callback_url(form: dict) -> str:
        url = form["CallbackUrl"]
        try:
            u = urlsplit(url)
            u.port  # noqa: B018 (raises on a bad port)
        except ValueError:
            raise invalid_param("CallbackUrl")
        if (u.scheme not in ("http", "https") or not u.hostname or u.username is not None
                or u.password is not None or any(c.isspace() for c in url)):
            raise invalid_param("CallbackUrl")
        return url

    @staticmethod
    def callback_method(form: dict, default: str) -> str:
        method = form.get("CallbackMethod", default)
        if method not in CALLBACK_METHODS:
            raise invalid_param("CallbackMethod")
        return method

    def find_trigger(self, state, account_sid, sid, path) -> dict:
        t = state.usage_triggers.get(sid)
        if not t or t["account_sid"] != account_sid:
            raise not_found(path)
        return t

    def list_usage_triggers(self, state, principal, p, form, path, query):
        acc = self.own_account(state, principal, p["AccountSid"])
        items = [t for t in state.usage_triggers.values() if t["account_sid"] == acc["sid"]]
        filters = {}
        if "Recurring" in query:
            want = query["Recurring"]
            if want not in RECURRING + ("",):
                raise invalid_param("Recurring")
            # "An empty value or a value of alltime reads non-recurring UsageTriggers."
            items = [t for t in items if (t["recurring"] or "alltime") == (want or "alltime")]
            filters["Recurring"] = want
        if "TriggerBy" in query:
            if query["TriggerBy"] not in TRIGGER_BY:
                raise invalid_param("TriggerBy")
            items = [t for t in items if t["trigger_by"] == query["TriggerBy"]]
            filters["TriggerBy"] = query["TriggerBy"]
        if "UsageCategory" in query:
            cat = self.category_param(query["UsageCategory"], "UsageCategory")
            items = [t for t in items if t["usage_category"] == cat]
            filters["UsageCategory"] = cat
        return 200, self.list_2010("usage_triggers", items, state.usage_trigger, path, query,
                                   filters)

    def create_usage_trigger(self, state, principal, p, form, path, query):
        acc = self.own_account(state, principal, p["AccountSid"])
        for name in ("CallbackUrl", "TriggerValue", "UsageCategory"):
            if not form.get(name):
                raise missing_param(name)
        url = self.callback_url(form)
        category = self.category_param(form["UsageCategory"], "UsageCategory")
        method = self.callback_method(form, "POST")
        recurring = form.get("Recurring", "")
        if recurring not in RECURRING + ("",):
            raise invalid_param("Recurring")
        trigger_by = form.get("TriggerBy", "count")
        if trigger_by not in TRIGGER_BY:
            raise invalid_param("TriggerBy")
        name = self.friendly_name(form, "")
        m = TRIGGER_VALUE_RE.match(form["TriggerValue"])
        if not m or Decimal(m.group(2)) <= 0:
            raise TwilioError(400, 20001, "TriggerValue must be a positive number (or +offset)")
        if trigger_by == "count" and "." in m.group(2):
            raise TwilioError(400, 20001, "TriggerValue must be a whole number for TriggerBy=count")
        now = time.time()
        t = {
            "sid": new_sid("UT"), "account_sid": acc["sid"], "callback_url": url,
            "callback_method": method, "friendly_name": name, "recurring": recurring,
            "trigger_by": trigger_by, "usage_category": category, "trigger_value": None,
            "created": now, "updated": now, "fired": None, "fired_period": None,
        }
        value = m.group(2)
        if m.group(1):
            value = dec_str(state.watched(t) + Decimal(value))
        t["trigger_value"] = value
        state.usage_triggers[t["sid"]] = t
        return 201, state.usage_trigger(t)

    def fetch_usage_trigger(self, state, principal, p, form, path, query):
        acc = self.own_account(state, principal, p["AccountSid"])
        return 200, state.usage_trigger(self.find_trigger(state, acc["sid"], p["Sid"], path))

    def update_usage_trigger(self, state, principal, p, form, path, query):
        acc = self.own_account(state, principal, p["AccountSid"])
        t = self.find_trigger(state, acc["sid"], p["Sid"], path)
        for name in ("TriggerValue", "UsageCategory", "Recurring", "TriggerBy"):
            if name in form:
                raise TwilioError(400, 20001, f"{name} cannot be updated")
        url = self.callback_url(form) if "CallbackUrl" in form else t["callback_url"]
        method = self.callback_method(form, t["callback_method"])
        name = self.friendly_name(form, t["friendly_name"])
        t.update(callback_url=url, callback_method=method, friendly_name=name,
                 updated=time.time())
        return 200, state.usage_trigger(t)

    def delete_usage_trigger(self, state, principal, p, form, path, query):
        acc = self.own_account(state, principal, p["AccountSid"])
        t = self.find_trigger(state, acc["sid"], p["Sid"], path)
        del state.usage_triggers[t["sid"]]
        return 204, None

    # -- keys, iam v1
    @staticmethod
    def key_v1(k: dict, secret: bool = False) -> dict:
        body = {
            "sid": k["sid"],
            "friendly_name": k["friendly_name"],
            "date_created": rfc2822(k["created"]),
            "date_updated": rfc2822(k["updated"]),
        }
        if secret:
            body["secret"] = k["secret"]
        body["policy"] = copy.deepcopy(k["policy"])
        return body

    def parse_policy(self, raw: str):
        try:
            policy = json.loads(raw)
        except ValueError:
            raise TwilioError(400, 20001, "Invalid Policy: not a JSON object")
        if not valid_policy(policy):
            raise TwilioError(400, 20001,
                              'Invalid Policy: expected {"allow": ["/twilio/..."]}')
        return policy

    def list_keys_v1(self, state, principal, p, form, path, query):
        account_sid = query.get("AccountSid")
        if not account_sid:
            raise TwilioError(400, 20001, "Missing required parameter AccountSid")
        acc = self.own_account(state, principal, account_sid)
        items = self.account_keys(state, acc["sid"])
        page, size, start, chunk, next_token = self.page_args(query, items)

        def url(**kw):
            return f"{IAM_BASE}{path}?" + urlencode({"AccountSid": acc["sid"], "PageSize": size, **kw})

        body = {
            "keys": [
                {
                    "sid": k["sid"],
                    "friendly_name": k["friendly_name"],
                    "date_created": rfc2822(k["created"]),
                    "date_updated": rfc2822(k["updated"]),
                }
                for k in chunk
            ],
            "meta": {
                "page": page,
                "page_size": size,
                "first_page_url": url(Page=0),
                "previous_page_url": (
                    url(Page=page - 1, PageToken="PB" + chunk[0]["sid"]) if page > 0 and chunk else None
                ),
                "url": url(Page=page, **({"PageToken": query["PageToken"]} if query.get("PageToken") else {})),
                "next_page_url": url(Page=page + 1, PageToken=next_token) if next_token else None,
                "key": "keys",
            },
        }
        return 200, body

    def create_key_v1(self, state, principal, p, form, path, query):
        account_sid = form.get("AccountSid")
        if not account_sid:
            raise missing_param("AccountSid")
        if not ACCOUNT_SID_RE.match(account_sid):
            raise invalid_param("AccountSid")
        acc = self.own_account(state, principal, account_sid)
        name = self.friendly_name(form, "")
        key_type = form.get("KeyType")
        if key_type not in (None, "restricted"):
            raise invalid_param("KeyType")
        policy = None
        if key_type == "restricted":
            if "Policy" not in form:
                raise TwilioError(400, 20001, "Policy is required for a restricted key")
            policy = self.parse_policy(form["Policy"])
        elif "Policy" in form:
            raise TwilioError(400, 20001, "Policy is only allowed with KeyType=restricted")
        sid = state.add_key({"account_sid": acc["sid"],
                             "type": "restricted" if policy is not None else "standard",
                             "friendly_name": name, "policy": policy,
                             "propagates": True})["sid"]
        return 201, self.key_v1(state.keys[sid], secret=True)

    def fetch_key_v1(self, state, principal, p, form, path, query):
        return 200, self.key_v1(self.find_key(state, principal["account_sid"], p["Sid"], path))

    def update_key_v1(self, state, principal, p, form, path, query):
        k = self.find_key(state, principal["account_sid"], p["Sid"], path)
        name = self.friendly_name(form, k["friendly_name"])
        if "Policy" in form:
            if k["type"] != "restricted":
                raise TwilioError(400, 20001, "Policy can only be set on a restricted key")
            k["policy"] = self.parse_policy(form["Policy"])
        k["friendly_name"] = name
        k["updated"] = time.time()
        return 200, self.key_v1(k)

    def delete_key_v1(self, state, principal, p, form, path, query):
        k = self.find_key(state, principal["account_sid"], p["Sid"], path)
        del state.keys[k["sid"]]
        return 204, None

    # -- auth tokens, accounts v1
    def create_secondary(self, state, principal, p, form, path, query):
        acc = state.accounts[principal["account_sid"]]
        if acc["secondary_auth_token"] is not None:
            raise TwilioError(400, 20001, "A secondary Auth Token already exists for this account")
        now = time.time()
        acc["secondary_auth_token"] = new_auth_token()
        acc["secondary_created"] = now
        acc["secondary_valid_from"] = state.valid_from(now)
        return 201, {
            "account_sid": acc["sid"],
            "date_created": iso8601(now),
            "date_updated": iso8601(now),
            "secondary_auth_token": acc["secondary_auth_token"],
            "url": f"{ACCOUNTS_BASE}/v1/AuthTokens/Secondary",
        }

    def delete_secondary(self, state, principal, p, form, path, query):
        acc = state.accounts[principal["account_sid"]]
        if acc["secondary_auth_token"] is None:
            raise not_found(path)
        acc["secondary_auth_token"] = None
        acc["secondary_created"] = None
        acc["secondary_valid_from"] = None
        return 204, None

    def promote(self, state, principal, p, form, path, query):
        acc = state.accounts[principal["account_sid"]]
        if acc["secondary_auth_token"] is None:
            raise TwilioError(400, 20001, "No secondary Auth Token to promote")
        now = time.time()
        created = acc["secondary_created"] or now
        acc["auth_token"] = acc["secondary_auth_token"]
        acc["secondary_auth_token"] = None
        acc["secondary_created"] = None
        acc["secondary_valid_from"] = None
        acc["updated"] = now
        return 200, {
            "account_sid": acc["sid"],
            "auth_token": acc["auth_token"],
            "date_created": iso8601(created),
            "date_updated": iso8601(now),
            "url": f"{ACCOUNTS_BASE}/v1/AuthTokens/Promote",
        }

    # -- verify v2
    def create_verification(self, state, principal, p, form, path, query):
        svc = state.services.get(p["ServiceSid"])
        if not svc or svc["account_sid"] != principal["account_sid"]:
            raise not_found(path)
        to = form.get("To")
        channel = form.get("Channel")
        if not to:
            raise missing_param("To")
        if not channel:
            raise missing_param("Channel")
        if channel == "auto":
            channel = "sms"
        if channel not in ("sms", "call", "email", "whatsapp", "sna"):
            raise TwilioError(400, 60200, "Invalid parameter `Channel`")
        if channel == "email":
            if "@" not in to:
                raise TwilioError(400, 60200, "Invalid parameter `To`")
        elif not E164_RE.match(to):
            raise TwilioError(400, 60200, "Invalid parameter `To`")
        now = time.time()
        sid = new_sid("VE")
        attempt_channel = channel.upper() if channel in ("sms", "call", "email") else channel
        v = {
            "sid": sid,
            "service_sid": svc["sid"],
            "account_sid": svc["account_sid"],
            "to": to,
            "channel": channel,
            "status": "pending",
            "valid": False,
            "date_created": iso8601(now),
            "date_updated": iso8601(now),
            "lookup": {},
            "amount": form.get("Amount"),
            "payee": form.get("Payee"),
            "send_code_attempts": [
                {"time": iso8601(now), "channel": attempt_channel, "attempt_sid": new_sid("VL")}
            ],
            "sna": None,
            "url": f"{VERIFY_BASE}/v2/Services/{svc['sid']}/Verifications/{sid}",
        }
        state.verifications[sid] = v
        return 201, copy.deepcopy(v)

    # -- OAuth token endpoints (no Authorization; the form carries the client)
    def create_token_v2(self, state, principal, p, form, path, query):
        return 200, token_grant(state, form.get("grant_type"), form.get("client_id"),
                                form.get("client_secret"),
                                ("grant_type", "client_id", "client_secret"))

    def create_token_v1(self, state, principal, p, form, path, query):
        return 201, token_grant(state, form.get("GrantType"), form.get("ClientId"),
                                form.get("ClientSecret"), ("GrantType", "ClientId", "ClientSecret"))


# ------------------------------------------------------------------- OAuth

def token_grant(state: State, grant_type, client_id, client_secret, names) -> dict:
    """The token answer for a client-credentials grant, or a TwilioError.
    `names` are the form fields' names as this endpoint spells them."""
    for value, name in zip((grant_type, client_id, client_secret), names):
        if not value:
            raise missing_param(name)
    if grant_type != "client_credentials":
        raise invalid_param(names[0])
    app = state.oauth_apps.get(client_id)
    if app is None or not same(client_secret, app["client_secret"]):
        raise TwilioError(401, 20003, "Authenticate: invalid client credentials")
    acc = state.accounts.get(app["account_sid"])
    if not acc or acc["status"] != "active":
        raise TwilioError(401, 20003, "Authenticate: invalid client credentials")
    return state.issue_token(app)




# ----------------------------------------------------------------- handler

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "twilio-fake/1.0"
    sys_version = ""

    # stderr log: method, path, status, username — never a secret
    def log_message(self, fmt, *args):  # noqa: D401 (silence the default log)
        pass

    def log(self, status: int, user: str | None):
        sys.stderr.write(f"twilio-fake: {self.command} {self.path} -> {status}"
                         f"{' (' + user + ')' if user else ''}\n")
        sys.stderr.flush()

    @property
    def state(self) -> State:
        return self.server.state  # type: ignore[attr-defined]

    @property
    def api(self) -> Api:
        return self.server.api  # type: ignore[attr-defined]

    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_PATCH(self):
        self.dispatch()

    # -- plumbing
    def read_body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def send_json(self, status: int, body, extra_headers: dict | None = None):
        if status == 204 or body is None:
            self.send_response(status)
            for k, v in (extra_headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def dispatch(self):
        split = urlsplit(self.path)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        raw = self.read_body()
        if path.startswith("/__fake/"):
            try:
                status, body = self.control(path, raw)
            except FakeError as e:
                status, body = e.status, {"error": e.message}
            except (ValueError, TypeError, KeyError) as e:
                status, body = 400, {"error": f"bad request: {type(e).__name__}"}
            self.send_json(status, body)
            self.log(status, None)
            return
        status, body, headers, user, route = self.twilio(path, query, raw)
        # Count before answering, so a test that reads /__fake/state right
        # after the answer sees this request.
        self.count(path, status, user, route)
        self.send_json(status, body, headers)
        self.log(status, user)

    def count(self, path, status, user, route):
        with self.state.lock:
            st = self.state
            st.total += 1
            name = f"{self.command} {route.template}" if route else f"{self.command} (unrouted)"
            c = st.counters.setdefault(name, {"count": 0, "status": {}, "usernames": {}})
            c["count"] += 1
            c["status"][str(status)] = c["status"].get(str(status), 0) + 1
            if user:
                c["usernames"][user] = c["usernames"].get(user, 0) + 1
            st.requests.append({"method": self.command, "path": path,
                                "route": route.template if route else None,
                                "status": status, "username": user, "time": time.time()})
            del st.requests[:-1000]

    def basic_auth(self) -> tuple[str, str] | None:
        h = self.headers.get("Authorization", "")
        scheme, _, token = h.partition(" ")
        if scheme.lower() != "basic" or not token:
            return None
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
        user, sep, pw = decoded.partition(":")
        return (user, pw) if sep else None

    def bearer(self) -> str | None:
        h = self.headers.get("Authorization", "")
        scheme, _, token = h.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip() or None

    def twilio(self, path, query, raw):
        """(status, body, headers, username, route) for an API request."""
        st = self.state
        wait = 0.0
        with st.lock:
            for d in st.delays:
                if path.startswith(d["path_prefix"]) and d.get("method") in (None, self.command):
                    d["count"] -= 1
                    if d["count"] <= 0:
                        st.delays.remove(d)
                    wait = d["seconds"]
                    break
        # Outside the lock: other requests go on meanwhile.
        if wait > 0:
            with st.lock:
                st.held += 1
            try:
                time.sleep(wait)
            finally:
                with st.lock:
                    st.held -= 1
        creds = self.basic_auth()
        bearer = self.bearer()
        user = creds[0] if creds and re.match(r"^(AC|SK)[0-9a-fA-F]{32}$", creds[0]) else None
        route = None
        with st.lock:
            try:
                try:
                    route, params = self.api.match(self.command, path)
                except TwilioError:
                    route, params = None, None
                fail = self.take_failure(path)
                if fail is not None and not fail[3]:
                    return fail[:3] + (user, route)
                if route is not None and route.public:
                    principal = None
                else:
                    if creds:
                        principal = st.authenticate(*creds)
                    elif bearer:
                        principal = st.bearer_principal(bearer)
                        # The log names the app (its client id), never the token.
                        user = principal["sid"] if principal else None
                    else:
                        principal = None
                    if principal is None:
                        raise unauthorized()
                    if route is None:
                        self.api.match(self.command, path)  # raises 404/405
                    Api.authorize(route, principal)
                form = self.parse_form(raw)
                status, body = route.handler(st, principal, params, form, path, query)
                if self.command != "GET" and 200 <= status < 300:
                    st.save()
                if fail is not None:
                    # Carried out; only the answer is lost.
                    return fail[:3] + (user, route)
                if body is not None and 200 <= status < 300:
                    status, body = self.apply_corruption(path, status, body)
                return status, body, None, user, route
            except TwilioError as e:
                return e.status, e.body(), None, user, route

    def parse_form(self, raw: bytes) -> dict:
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if not raw or ctype not in ("application/x-www-form-urlencoded", ""):
            return {}
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise TwilioError(400, 20001, "Request body is not UTF-8")
        return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}

    def take_failure(self, path: str):
        for f in self.state.failures:
            if path.startswith(f["path_prefix"]) and f.get("method") in (None, self.command):
                f["count"] -= 1
                if f["count"] <= 0:
                    self.state.failures.remove(f)
                err = TwilioError(f["status"], f.get("code"), f.get("message"))
                headers = {}
                if f.get("retry_after") is not None:
                    headers["Retry-After"] = str(f["retry_after"])
                return err.status, err.body(), headers, bool(f.get("after"))
        return None

    def apply_corruption(self, path: str, status: int, body):
        for c in self.state.corruptions:
            if path.startswith(c["path_prefix"]) and c.get("method") in (None, self.command):
                c["count"] -= 1
                if c["count"] <= 0:
                    self.state.corruptions.remove(c)
                body = copy.deepcopy(body)
                for f in c.get("drop", []):
                    parent, last = self.corrupt_target(body, f)
                    if isinstance(parent, dict):
                        parent.pop(last, None)
                for f, v in c.get("set", {}).items():
                    parent, last = self.corrupt_target(body, f)
                    if isinstance(parent, dict):
                        parent[last] = v
                    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
                        parent[int(last)] = v
                return c.get("status", status), body
        return status, body

    @staticmethod
    def corrupt_target(body, field: str):
        """(container, last key) of a dotted path ("usage_records.0.count");
        container None when the path does not exist."""
        *head, last = field.split(".")
        node = body
        for part in head:
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                return None, last
        return node, last

    # -- test hooks
    def control(self, path: str, raw: bytes):
        st = self.state
        doc = json.loads(raw) if raw.strip() else {}
        if not isinstance(doc, dict):
            raise FakeError(400, "expected a JSON object")
        m = self.command
        with st.lock:
            if path == "/__fake/state" and m == "GET":
                return 200, st.public_state()
            if path == "/__fake/requests" and m == "GET":
                return 200, {"requests": list(st.requests)}
            if m != "POST":
                raise FakeError(405, "method not allowed")
            if path == "/__fake/accounts":
                out = st.add_account(doc)
                st.save()
                return 200, out
            if path == "/__fake/keys":
                if "count" in doc:
                    n = int(doc.pop("count"))
                    if not 1 <= n <= 5000:
                        raise FakeError(400, "count must be 1..5000")
                    out = {"sids": [st.add_key(dict(doc))["sid"] for _ in range(n)]}
                else:
                    out = st.add_key(doc)
                st.save()
                return 200, out
            if path == "/__fake/propagation":
                seconds = float(doc.get("seconds", 0))
                st.propagation = None if seconds < 0 else seconds
                if doc.get("release"):
                    now = time.time()
                    for k in st.keys.values():
                        if k.get("valid_from", 0) > now:
                            k["valid_from"] = now
                    for a in st.accounts.values():
                        if (a.get("secondary_valid_from") or 0) > now:
                            a["secondary_valid_from"] = now
                    st.save()
                return 200, {"propagation": seconds}
            if path == "/__fake/usage":
                day = st.usage_day
                if "date" in doc:
                    st.set_usage_day(doc["date"])
                    if "category" not in doc and "account_sid" not in doc:
                        st.save()
                        return 200, {"date": st.usage_day}
                try:
                    jobs = st.set_usage(doc)
                except FakeError:
                    st.usage_day = day  # all or nothing
                    raise
                st.save()
                for job in jobs:
                    threading.Thread(target=st.call_back, args=(job,), daemon=True).start()
                return 200, st.usage_record(doc["account_sid"], doc["category"])
            if path == "/__fake/services":
                out = st.add_service(doc)
                st.save()
                return 200, out
            if path == "/__fake/oauth_apps":
                out = st.add_oauth_app(doc)
                st.save()
                return 200, out
            if path == "/__fake/oauth":
                ttl = int(doc.get("ttl", 3600))
                if not 1 <= ttl <= 86400:
                    raise FakeError(400, "ttl must be 1..86400 seconds")
                st.oauth_ttl = ttl
                return 200, {"ttl": ttl}
            if path == "/__fake/check":
                u, pw = doc.get("username"), doc.get("password")
                if not isinstance(u, str) or not isinstance(pw, str):
                    raise FakeError(400, "username and password must be strings")
                p = st.authenticate(u, pw)
                return 200, {"valid": p is not None, "type": p["type"] if p else None}
            if path == "/__fake/fail":
                prefix = doc.get("path_prefix")
                if not isinstance(prefix, str):
                    raise FakeError(400, "path_prefix must be a string")
                count = int(doc.get("count", 1))
                st.failures = [f for f in st.failures if f["path_prefix"] != prefix]
                if count > 0:
                    status = int(doc.get("status", 500))
                    st.failures.append({
                        "path_prefix": prefix, "status": status, "count": count,
                        "method": doc.get("method"), "code": doc.get("code"),
                        "message": doc.get("message"), "retry_after": doc.get("retry_after"),
                        "after": bool(doc.get("after")),
                    })
                return 200, {"failures": st.failures}
            if path == "/__fake/delay":
                prefix = doc.get("path_prefix")
                if not isinstance(prefix, str):
                    raise FakeError(400, "path_prefix must be a string")
                st.delays = [d for d in st.delays if d["path_prefix"] != prefix]
                count = int(doc.get("count", 1))
                if count > 0:
                    st.delays.append({"path_prefix": prefix, "count": count,
                                      "seconds": float(doc.get("seconds", 1)),
                                      "method": doc.get("method")})
                return 200, {"delays": st.delays}
            if path == "/__fake/corrupt":
                prefix = doc.get("path_prefix")
                if not isinstance(prefix, str):
                    raise FakeError(400, "path_prefix must be a string")
                st.corruptions.append({
                    "path_prefix": prefix, "count": int(doc.get("count", 1)),
                    "method": doc.get("method"), "set": doc.get("set", {}),
                    "drop": doc.get("drop", []),
                    **({"status": int(doc["status"])} if "status" in doc else {}),
                })
                return 200, {"corruptions": len(st.corruptions)}
            if path == "/__fake/reset":
                st.clear()
                st.save()
                return 200, {"reset": True}
            if path == "/__fake/reset-counters":
                st.reset_counters()
                return 200, {"reset": True}
        raise FakeError(404, f"no test hook {path}")


# -------------------------------------------------------------------- main

def parse_args(argv):
    ap = argparse.ArgumentParser(description="Stateful fake of Twilio's REST API (tests only)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--state", help="JSON file the state is kept in (loaded at start)")
    ap.add_argument("--seed", help="JSON file of accounts, keys and services to add at start")
    ap.add_argument("--absolute-uris", action="store_true",
                    help="absolute uri fields in 2010 list envelopes (Twilio sends relative ones)")
    return ap.parse_args(argv)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    server = Server((args.host, args.port), Handler)
    server.state = State(args)  # type: ignore[attr-defined]
    server.api = Api(args)  # type: ignore[attr-defined]
    server.args = args  # type: ignore[attr-defined]
    sys.stdout.write(f"PORT={server.server_address[1]}\n")
    sys.stdout.flush()

    def stop(_sig, _frm):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
