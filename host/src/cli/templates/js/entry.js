// The component's entry module, written by `tollgate policy build`: the world's exports,
// wrapping the project's policy.
import * as policy from "../policy.js";
import { exportPolicy } from "tollgate-policy/component";

const exported = exportPolicy(policy);
export function route(request, context) {
  return exported.route(request, context);
}
export function onComplete(completion, context) {
  exported.onComplete(completion, context);
}
