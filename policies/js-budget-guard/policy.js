// The stock `budget-guard` policy in JavaScript: serve with the primary model until the
// tenant's spend passes a share of its budget, then downgrade to a cheaper model; cap each
// end user's spend with counters kept in the tenant's memory. Same config, decisions and
// memory layout as the Rust `policies/budget-guard`.
//
// Config:
//   {"primary": {"provider": "openai", "model": "gpt-4o", "credential": "oa"},
//    "fallback": {"provider": "openai", "model": "gpt-4o-mini", "credential": "oa"},
//    "downgrade_at": 0.8, "user_cap_microdollars": 2000000}
// End-user spend is counted per budget period in memory keys `user-spend/<period>/<user>`
// (little-endian u64), updated by `onComplete`; a user at the cap gets 429
// `user_budget_exceeded`.

import { ConfigError, MemoryDenied, Plan, Target, formatWhole, log, memory, metering, reject, t, usedShare } from "tollgate-policy";

const TargetConfig = t.object({
  provider: t.string,
  model: t.string,
  credential: t.withDefault(t.string, ""),
});

const Config = t.object({
  // Used while spend is below `downgrade_at`.
  primary: TargetConfig,
  // Used once spend passes `downgrade_at`.
  fallback: TargetConfig,
  // Share of the budget (spent plus reserved) at which to downgrade.
  downgrade_at: t.withDefault(t.number, 0.8),
  // Per-end-user cap for the period, in micro-dollars.
  user_cap_microdollars: t.optional(t.integer),
});

/** Counters saturate here, as the Rust policy's `saturating_add` does. */
const U64_MAX = 2n ** 64n - 1n;

const userKey = (periodId, user) => `user-spend/${periodId}/${user}`;

/** @type {import("tollgate-policy").Route} */
export function route(request, context) {
  let config;
  try {
    config = context.config(Config);
  } catch (e) {
    if (e instanceof ConfigError) return e.rejection();
    throw e;
  }
  const budget = metering.budget();
  const user = request.endUser;
  if (config.user_cap_microdollars !== undefined && user !== undefined) {
    let spent;
    try {
      spent = memory.getU64(userKey(budget.periodId, user));
    } catch (e) {
      // Fail closed: a cap that cannot be read is not enforced by guessing.
      if (e instanceof MemoryDenied) return reject(429, "user_budget_unavailable", `end-user budget unavailable: ${e.message}`);
      throw e;
    }
    if (spent >= config.user_cap_microdollars) {
      return reject(429, "user_budget_exceeded", `end user '${user}' has used its budget for ${budget.periodId}`);
    }
  }
  const share = usedShare(budget);
  const [chosen, why] =
    share >= config.downgrade_at
      ? [config.fallback, `downgraded at ${formatWhole(share * 100)}% of budget`]
      : [config.primary, `primary at ${formatWhole(share * 100)}% of budget`];
  const notifyComplete = config.user_cap_microdollars !== undefined && user !== undefined;
  return Plan.to(new Target(chosen.provider, chosen.model, chosen.credential), { trace: why, notifyComplete });
}

/** @type {import("tollgate-policy").OnComplete} */
export function onComplete(completion, context) {
  const user = completion.endUser;
  if (user === undefined) return;
  const key = userKey(metering.budget().periodId, user);
  let spent = 0;
  try {
    spent = memory.getU64(key);
  } catch (e) {
    if (!(e instanceof MemoryDenied)) throw e;
  }
  const total = BigInt(spent) + BigInt(completion.costMicrodollars);
  try {
    memory.setU64(key, total > U64_MAX ? U64_MAX : total);
  } catch (e) {
    if (!(e instanceof MemoryDenied)) throw e;
    log.warn(`could not record spend of end user '${user}': ${e.message}`);
  }
}
