// Types of tollgate-policy for TypeScript users and editors.

/** What the client asked for. */
export type Operation = "chat" | "embeddings";
/** The wire format the client spoke. */
export type Api = "openai-chat-completions" | "openai-responses" | "anthropic-messages" | "openai-embeddings";
/** How a routed request ended. */
export type Outcome = "success" | "upstream-error" | "client-disconnected";
/** Severity of a policy log message. */
export type Level = "trace" | "debug" | "info" | "warn" | "error";

/** One chat message: role and text, with counts of the parts a policy does not see. */
export interface Message {
  role: "system" | "user" | "assistant" | "tool" | string;
  text: string;
  imageCount: number;
  toolCallCount: number;
}

/** The request the client sent, validated and translated into one shape whatever API it came in. */
export class Request {
  constructor(model: string, fields?: Partial<Omit<Request, "user">>);
  operation: Operation;
  api: Api;
  /** The `model` field exactly as sent (a model, `provider/model`, or a tenant alias). */
  model: string;
  messages: Message[];
  maxTokens?: number;
  temperature?: number;
  stream: boolean;
  toolCount: number;
  /** The end user from the request's `user` field. */
  endUser?: string;
  metadata: [string, string][];
  /** The gateway's estimate of the prompt's size in tokens. */
  promptTokenEstimate: number;
  /** Appends a user message and grows the prompt estimate (4 bytes per token). */
  user(text: string): this;
  /** An embeddings request, the inputs as one user message. */
  static embeddings(model: string, inputs: string[]): Request;
}

/** Facts about the call that the client did not send. */
export class Context {
  constructor(fields?: Partial<Pick<Context, "tenantId" | "requestId" | "sessionId" | "unixMillis" | "configJson">>);
  tenantId: string;
  requestId: string;
  sessionId?: string;
  /** Milliseconds since the Unix epoch. */
  unixMillis: number;
  /** The tenant's policy configuration, JSON. */
  configJson: string;
  /** Parses the configuration with `schema`, or as a plain object; throws ConfigError. */
  config<T>(schema: Schema<T>): T;
  config(): Record<string, unknown>;
}

/** One place to send the request. */
export class Target {
  constructor(provider: string, model: string, credential?: string, options?: { maxTokens?: number; temperature?: number });
  provider: string;
  model: string;
  credential: string;
  maxTokens?: number;
  temperature?: number;
}

export interface PlanOptions {
  /** A short reason, returned in the `x-tollgate-policy-trace` header. */
  trace?: string;
  /** Usage-attribution labels. */
  tags?: string[];
  /** Budget to reserve, in micro-dollars, instead of the gateway's estimate. */
  reserveMicrodollars?: number;
  /** Whether the gateway should call `onComplete` afterwards. */
  notifyComplete?: boolean;
}

/** What to do with an accepted request: targets in order, plus attribution. */
export class Plan {
  constructor(targets: Target[], options?: PlanOptions);
  targets: Target[];
  trace: string;
  tags: string[];
  reserveMicrodollars?: number;
  notifyComplete: boolean;
  static to(target: Target, options?: PlanOptions): Plan;
  /** Appends a fallback target, tried when the earlier ones fail. */
  fallback(target: Target): this;
}

/** A refusal, sent to the client as an OpenAI-style error. */
export class Rejection {
  constructor(status: number, code: string, message: string);
  status: number;
  code: string;
  message: string;
}

/** What `route` returns. */
export type Decision = Plan | Rejection;
/** The function a policy exports as `route`. */
export type Route = (request: Request, context: Context) => Decision;
/** The function a policy may export as `onComplete`. */
export type OnComplete = (completion: Completion, context: Context) => void;

export function reject(status: number, code: string, message: string): Rejection;
/** `x` with no decimals, ties to even (as Rust's `{:.0}` prints it). */
export function formatWhole(x: number): string;

/** What happened to a routed request, given to `onComplete`. */
export class Completion {
  constructor(fields?: Partial<Completion>);
  requestId: string;
  outcome: Outcome;
  provider: string;
  model: string;
  endUser?: string;
  promptTokens: number;
  completionTokens: number;
  costMicrodollars: number;
  latencyMs: number;
  tags: string[];
}

export interface CredentialInfo { name: string; provider: string }
export interface BudgetStatus {
  period: "day" | "month" | "total" | string;
  periodId: string;
  limitMicrodollars?: number;
  spentMicrodollars: number;
  reservedMicrodollars: number;
}
export interface ModelInfo {
  provider: string;
  model: string;
  inputMicrodollarsPerMtok: number;
  outputMicrodollarsPerMtok: number;
  contextWindow: number;
}

/** A memory call was refused. */
export class MemoryDenied extends Error {
  kind: "invalid-key" | "value-too-large" | "quota-exceeded" | "too-many-operations" | "unavailable";
  detail: string;
}

/** The configuration did not match the schema. */
export class ConfigError extends Error {
  rejection(): Rejection;
}

/** A config schema built with `t`. */
export interface Schema<T> { parse(value: unknown, path: string): T }
export const t: {
  string: Schema<string>;
  number: Schema<number>;
  integer: Schema<number>;
  boolean: Schema<boolean>;
  array<T>(item: Schema<T>): Schema<T[]>;
  object<F extends Record<string, Schema<any>>>(fields: F): Schema<{ [K in keyof F]: F[K] extends Schema<infer T> ? T : never }>;
  optional<T>(inner: Schema<T>): Schema<T | undefined>;
  withDefault<T>(inner: Schema<T>, value: T): Schema<T>;
};

export const credentials: { list(): CredentialInfo[]; forProvider(provider: string): CredentialInfo | undefined };
export const memory: {
  get(key: string): Uint8Array | undefined;
  set(key: string, value: Uint8Array | string): void;
  delete(key: string): void;
  listKeys(prefix: string, limit: number): string[];
  getU64(key: string): number;
  setU64(key: string, value: number | bigint): void;
};
export const metering: { budget(): BudgetStatus; userSpend(endUser: string): number; tagSpend(tag: string): number };
export const catalog: { models(): ModelInfo[]; lookup(model: string): ModelInfo | undefined };
export const log: { write(level: Level, message: string): void; info(message: string): void; warn(message: string): void };
/** Spent plus reserved as a share of the budget (0 when there is no budget). */
export function usedShare(budget: BudgetStatus): number;
