// Types of the credbroker package (the JavaScript in lib/ is the source).
import type { Twilio, ClientOpts } from "twilio";

export type SecretType = "auth_token" | "api_key" | "bearer";

export class PreviousCredential {
  readonly type: "auth_token" | "api_key";
  readonly apiKeySid: string | null;
  readonly version: string;
  readonly retireAt: Date | null;
  exposeSecret(): string;
  basicAuth(accountSid: string): { username: string; password: string };
  toJSON(): object;
}

export class Credential {
  readonly name: string;
  readonly accountSid: string;
  readonly type: SecretType;
  readonly apiKeySid: string | null;
  readonly tokenExpiresAt: Date | null;
  readonly version: string;
  readonly issuedAt: Date | null;
  readonly expiresAt: Date | null;
  readonly stale: boolean;
  readonly staleSince: Date | null;
  readonly previous: PreviousCredential | null;
  /** The Auth Token, API Key Secret or bearer access token. */
  exposeSecret(): string;
  basicAuth(): { username: string; password: string };
  toJSON(): object;
}

export class AccessToken {
  readonly expiresAt: Date | null;
  toJwt(): string;
  toJSON(): object;
}

export type FormParams =
  | Record<string, string | number | boolean | Array<string | number | boolean>>
  | URLSearchParams
  | Array<[string, string]>;

export interface WatchOptions {
  signal?: AbortSignal;
  backoff?: { baseMs?: number; maxMs?: number };
  onError?: (err: CredbrokerError) => void;
}

export class Broker {
  constructor(socketPath?: string, opts?: { deadlineMs?: number; channelOptions?: Record<string, unknown> });
  readonly socketPath: string;
  get(name: string): Promise<Credential>;
  list(): Promise<Array<{ name: string; kind: string }>>;
  watch(name: string, opts?: WatchOptions): AsyncGenerator<Credential, void, undefined>;
  validateWebhook(req: {
    credential: string;
    url: string;
    params?: FormParams;
    body?: string | Uint8Array;
    signature: string;
  }): Promise<{ valid: boolean; matched: "current" | "previous" | "" }>;
  mintAccessToken(req: {
    credential: string;
    identity: string;
    ttlSeconds?: number;
    voice?: { outgoingApplicationSid?: string; incomingAllow?: boolean };
    video?: { room?: string };
    chat?: { serviceSid?: string };
    sync?: { serviceSid?: string };
  }): Promise<AccessToken>;
  rotate(name: string): Promise<object>;
  rotationStatus(name: string): Promise<object>;
  usage(name: string): Promise<object>;
  clearAlert(name: string): Promise<object>;
  close(): void;
}

export function twilioClient(broker: Broker, name: string, opts?: ClientOpts): Promise<Twilio>;

export class WebhookValidator {
  constructor(broker: Broker, credential: string);
  readonly credential: string;
  validate(req: {
    signature: string;
    url: string;
    params?: FormParams;
    body?: string | Uint8Array;
  }): Promise<{ valid: boolean; matched: "current" | "previous" | "" }>;
  validateRequest(twilioHeader: string, url: string, params: FormParams): Promise<boolean>;
  validateRequestWithBody(twilioHeader: string, url: string, body: string | Uint8Array): Promise<boolean>;
}
export { WebhookValidator as RequestValidator };

export class CredbrokerError extends Error {
  readonly credential: string | null;
  /** The gRPC status name, e.g. "NOT_FOUND". */
  readonly code: string | null;
}
export class NotFoundError extends CredbrokerError {}
export class PermissionDeniedError extends CredbrokerError {}
export class UnavailableError extends CredbrokerError {}
export class InvalidArgumentError extends CredbrokerError {}
export class FailedPreconditionError extends CredbrokerError {}
