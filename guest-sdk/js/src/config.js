// Reading the tenant's JSON policy configuration against a schema.
//
// Strict like the Rust SDK's serde (`deny_unknown_fields`): a typo in a field name, a
// missing required field or a value of the wrong type is a ConfigError naming it, so a
// tenant learns of the mistake on its first request instead of being routed by defaults.

import { Rejection } from "./types.js";

/** The tenant's policy configuration did not match what the policy expects. */
export class ConfigError extends Error {
  constructor(why) {
    super(`invalid policy config: ${why}`);
    this.name = "ConfigError";
  }

  /** The refusal a policy should answer with: a 400 `invalid_policy_config` naming the problem. */
  rejection() {
    return new Rejection(400, "invalid_policy_config", this.message);
  }
}

function kind(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  switch (typeof value) {
    case "boolean": return "a boolean";
    case "number": return "a number";
    case "string": return "a string";
    default: return "an object";
  }
}

const at = (path) => (path ? ` at \`${path}\`` : "");

function scalar(name, test) {
  return {
    parse(value, path) {
      if (!test(value)) throw new ConfigError(`expected ${name}${at(path)}, found ${kind(value)}`);
      return value;
    },
  };
}

/** Schema types for `context.config(schema)`. */
export const t = {
  /** A JSON string. */
  string: scalar("a string", (v) => typeof v === "string"),
  /** A JSON number. */
  number: scalar("a number", (v) => typeof v === "number"),
  /** A non-negative whole number. */
  integer: scalar("a non-negative integer", (v) => Number.isInteger(v) && v >= 0),
  /** true or false. */
  boolean: scalar("a boolean", (v) => typeof v === "boolean"),
  /** An array of `item`. */
  array(item) {
    return {
      parse(value, path) {
        if (!Array.isArray(value)) throw new ConfigError(`expected an array${at(path)}, found ${kind(value)}`);
        return value.map((v, i) => item.parse(v, `${path}[${i}]`));
      },
    };
  },
  /** An object with exactly these fields (others are refused); `fields` maps each JSON
   * key to its schema. */
  object(fields) {
    return {
      parse(value, path) {
        if (value === null || typeof value !== "object" || Array.isArray(value)) {
          throw new ConfigError(`expected an object${at(path)}, found ${kind(value)}`);
        }
        for (const key of Object.keys(value)) {
          if (!Object.hasOwn(fields, key)) {
            const expected = Object.keys(fields).map((k) => `\`${k}\``).join(", ");
            throw new ConfigError(`unknown field \`${key}\`${at(path)}, expected one of ${expected}`);
          }
        }
        const out = {};
        for (const [key, schema] of Object.entries(fields)) {
          const inner = path ? `${path}.${key}` : key;
          if (Object.hasOwn(value, key) && !(value[key] === null && schema.missing)) {
            out[key] = schema.parse(value[key], inner);
          } else if (schema.missing) {
            out[key] = schema.missing();
          } else {
            throw new ConfigError(`missing field \`${inner}\``);
          }
        }
        return out;
      },
    };
  },
  /** `inner`, or undefined when absent or null. */
  optional(inner) {
    return { parse: (v, p) => inner.parse(v, p), missing: () => undefined };
  },
  /** `inner`, or `value` when absent. */
  withDefault(inner, value) {
    return { parse: (v, p) => inner.parse(v, p), missing: () => JSON.parse(JSON.stringify(value)) };
  },
};

/** Parses `text` (JSON; empty reads as `{}`) with `schema`, or as a plain object without one. */
export function parseConfig(text, schema) {
  let value;
  try {
    value = JSON.parse(text.trim() === "" ? "{}" : text);
  } catch (e) {
    throw new ConfigError(e.message);
  }
  if (schema === undefined) {
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new ConfigError(`expected a JSON object, found ${kind(value)}`);
    }
    return value;
  }
  return schema.parse(value, "");
}
