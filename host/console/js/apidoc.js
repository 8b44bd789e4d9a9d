// The gateway's OpenAPI description (`GET /openapi.json`), read once per page: the forms'
// choices (token scopes, budget periods) and the API tab come from it, so a value the
// gateway adds shows up here without a console change.

import { getPublic } from "./api.js";
import { useLoad } from "./ui.js";

const DOCUMENT = "/openapi.json";
// Deeper than any real schema: guards a `$ref` cycle, which would otherwise never end.
const MAX_REF_DEPTH = 32;
// How the API tab orders one path's operations.
const METHODS = ["get", "post", "put", "patch", "delete", "head", "options", "trace"];

/** The description could not be read, or does not describe what the console needs. */
export class DescriptionError extends Error {
  constructor(message) {
    super(message);
    this.name = "DescriptionError";
  }
}

let loading = null;

/**
 * The parsed document, fetched on the first call and shared after. A failed fetch is not
 * kept, so the next view that asks tries again. Rejects with a DescriptionError.
 */
export function description() {
  if (!loading) {
    loading = getPublic(DOCUMENT).then(
      (doc) => {
        if (!doc || typeof doc.paths !== "object" || doc.paths === null) throw new DescriptionError(`The API description (${DOCUMENT}) has no paths.`);
        return doc;
      },
      (e) => {
        throw new DescriptionError(`The API description (${DOCUMENT}) could not be read: ${e.message || e}`);
      },
    );
    loading.catch(() => {
      loading = null;
    });
  }
  return loading;
}

/** Description text without Markdown's code backticks, for a person. */
function plain(text) {
  return (text || "").replace(/`/g, "").replace(/\s+/g, " ").trim();
}

/** The node a local `$ref` (`#/components/schemas/Scope`) points at. */
function pointer(doc, ref) {
  if (typeof ref !== "string" || !ref.startsWith("#/")) throw new DescriptionError(`The API description has a $ref the console cannot follow: ${ref}`);
  let node = doc;
  for (const raw of ref.slice(2).split("/")) {
    const key = decodeURIComponent(raw).replace(/~1/g, "/").replace(/~0/g, "~");
    node = node !== null && typeof node === "object" ? node[key] : undefined;
    if (node === undefined) throw new DescriptionError(`The API description's $ref ${ref} points at nothing.`);
  }
  return node;
}

/** `node` with its `$ref` followed (repeatedly); keys beside a `$ref` win, as in 3.1. */
export function resolve(doc, node) {
  let depth = 0;
  while (node && typeof node === "object" && "$ref" in node) {
    if (++depth > MAX_REF_DEPTH) throw new DescriptionError(`The API description's $ref ${node.$ref} does not end.`);
    const { $ref, ...beside } = node;
    node = { ...pointer(doc, $ref), ...beside };
  }
  return node;
}

/** Whether the concrete `path` (`/admin/v1/tenants/acme/tokens`) fits `template` (`.../{id}/tokens`). */
function fits(template, path) {
  const want = template.split("/");
  const got = path.split("/");
  return want.length === got.length && want.every((part, i) => (/^\{[^}]+\}$/.test(part) ? got[i] !== "" : part === got[i]));
}

/** The operation the console calls as `method path` (a concrete path), resolved. */
function operation(doc, method, path) {
  const exact = doc.paths[path];
  const template = exact ? path : Object.keys(doc.paths).find((t) => fits(t, path));
  const op = template && resolve(doc, doc.paths[template])[method.toLowerCase()];
  if (!op) throw new DescriptionError(`The API description has no ${method.toUpperCase()} ${path}.`);
  return resolve(doc, op);
}

/** The string choices of `schema`: its `enum`, or the one `oneOf`/`anyOf` branch with one (`null` aside). */
function enumOf(doc, schema) {
  const node = resolve(doc, schema);
  if (!node || typeof node !== "object") return null;
  if (Array.isArray(node.enum)) return node.enum.filter((v) => typeof v === "string");
  for (const branch of [...(node.oneOf || []), ...(node.anyOf || [])]) {
    const found = enumOf(doc, branch);
    if (found) return found;
  }
  return null;
}

/**
 * The choices the gateway accepts for `field` of the JSON body of `method path`, with the
 * field's description. Throws a DescriptionError when the document gives none.
 */
export function bodyChoices(doc, method, path, field) {
  const op = operation(doc, method, path);
  const body = op.requestBody && resolve(doc, op.requestBody);
  const media = body && body.content && body.content["application/json"];
  const schema = media && resolve(doc, media.schema);
  const property = schema && schema.properties && schema.properties[field];
  const choices = property && enumOf(doc, property);
  if (!choices || choices.length === 0) throw new DescriptionError(`The API description gives no choices for "${field}" of ${method.toUpperCase()} ${path}.`);
  const resolved = resolve(doc, property);
  return { choices, description: plain(resolved.description) };
}

/** `{data, error, ...}` (as `useLoad`) of `bodyChoices(method, path, field)`. */
export function useBodyChoices(method, path, field) {
  return useLoad(async () => bodyChoices(await description(), method, path, field), [method, path, field]);
}

/** Whether the signed-in caller may call `path` (of tags `tags`) at all. */
function mayCall(who, path, tags) {
  if (who.kind === "operator") return true;
  // A tenant's manage token: the model APIs and its own resources, never `/admin/...`.
  return tags.includes("models") || path === "/v1/tenant" || path.startsWith("/v1/tenant/");
}

/**
 * The routes `who` may call, grouped by their first tag in the document's tag order:
 * `[{tag, description, routes: [{method, path, summary}]}]`.
 */
export function routesFor(doc, who) {
  const groups = new Map();
  for (const tag of doc.tags || []) groups.set(tag.name, { tag: tag.name, description: plain(tag.description), routes: [] });
  for (const path of Object.keys(doc.paths).sort()) {
    const item = resolve(doc, doc.paths[path]);
    for (const method of METHODS) {
      const op = item[method] && resolve(doc, item[method]);
      if (!op) continue;
      const tags = op.tags && op.tags.length ? op.tags : ["other"];
      if (!mayCall(who, path, tags)) continue;
      if (!groups.has(tags[0])) groups.set(tags[0], { tag: tags[0], description: "", routes: [] });
      groups.get(tags[0]).routes.push({ method: method.toUpperCase(), path, summary: plain(op.summary || op.description) });
    }
  }
  return [...groups.values()].filter((g) => g.routes.length > 0);
}
