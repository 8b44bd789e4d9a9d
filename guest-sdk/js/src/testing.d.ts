import type { Completion, CredentialInfo, Decision, Level, ModelInfo, OnComplete, Request, Route, Context } from "./index.js";

export const MAX_KEY_BYTES: number;
export const MAX_LIST_KEYS: number;

/** The fake gateway a native test runs a policy against. */
export class Harness {
  context: Context;
  credentials: CredentialInfo[];
  /** What the policy stored in memory. */
  memory: Map<string, Uint8Array>;
  models: ModelInfo[];
  /** What the policy logged. */
  log: [Level, string][];
  config(config: string | object): this;
  credential(name: string, provider: string): this;
  model(provider: string, model: string, input: number, output: number, contextWindow: number): this;
  budget(limitMicrodollars: number | undefined, spentMicrodollars: number): this;
  userSpend(endUser: string, microdollars: number): this;
  tagSpend(tag: string, microdollars: number): this;
  memoryQuota(limit: number): this;
  route(policy: { route: Route }, request: Request): Decision;
  onComplete(policy: { onComplete?: OnComplete }, completion: Completion): void;
}
