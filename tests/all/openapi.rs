//! `GET /openapi.json`: served without a token as OpenAPI 3.1; describes every route the
//! server answers (and only those); its required request fields are the ones the server
//! refuses a body without; real answers match its response schemas; and an independent
//! validator (Python `openapi-spec-validator`, in a virtual environment under
//! `target/py-openapi`) accepts it and rejects a copy with a broken `$ref`.

use serde_json::{json, Value};

use crate::support::{Gateway, Reply, ADMIN};

/// The validator version the test pins.
const VALIDATOR: &str = "openapi-spec-validator==0.9.0";

/// Every route the server answers, from the route match (`server.rs`, `admin.rs`,
/// `tenant_api.rs`) and the README's API tables.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/console/"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),
    ("POST", "/v1/responses"),
    ("DELETE", "/v1/responses/{id}"),
    ("GET", "/v1/models"),
    ("POST", "/admin/v1/tenants"),
    ("GET", "/admin/v1/tenants"),
    ("GET", "/admin/v1/usage/top"),
    ("PATCH", "/admin/v1/tenants/{id}"),
    ("DELETE", "/admin/v1/tenants/{id}"),
    ("GET", "/admin/v1/audit"),
    ("GET", "/admin/v1/audit/verify"),
    ("GET", "/admin/v1/backup"),
    ("POST", "/admin/v1/policies"),
    ("DELETE", "/admin/v1/policies/{hash}"),
    ("POST", "/admin/v1/keys/rotate"),
    ("POST", "/api/v1/tenants"),
    ("GET", "/api/v1/metering/tenant/{id}"),
    ("POST", "/v1/tenant/policies"),
];

/// One tenant's resources, served under `/admin/v1/tenants/{id}` and `/v1/tenant`.
const TENANT_ROUTES: &[(&str, &str)] = &[
    ("GET", ""),
    ("POST", "/tokens"),
    ("GET", "/tokens"),
    ("DELETE", "/tokens/{token_id}"),
    ("PUT", "/credentials/{name}"),
    ("GET", "/credentials"),
    ("DELETE", "/credentials/{name}"),
    ("GET", "/policy"),
    ("PUT", "/policy"),
    ("POST", "/policy/rollback"),
    ("POST", "/policy/replay"),
    ("GET", "/policy/candidate"),
    ("PUT", "/policy/candidate"),
    ("POST", "/policy/candidate/promote"),
    ("DELETE", "/policy/candidate"),
    ("GET", "/policy/log"),
    ("GET", "/policies"),
    ("DELETE", "/policies/{hash}"),
    ("GET", "/audit"),
    ("GET", "/usage"),
    ("GET", "/usage/daily"),
    ("GET", "/usage/records"),
    ("GET", "/budget"),
    ("GET", "/sessions"),
    ("GET", "/sessions/{session}"),
    ("DELETE", "/sessions/{session}"),
    ("GET", "/memory"),
    ("DELETE", "/memory/{key}"),
];

fn all_routes() -> Vec<(String, String)> {
    let mut routes: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    for (method, rest) in TENANT_ROUTES {
        routes.push((method.to_string(), format!("/admin/v1/tenants/{{id}}{rest}")));
        routes.push((method.to_string(), format!("/v1/tenant{rest}")));
    }
    routes
}

async fn document(gw: &Gateway) -> Value {
    let reply = gw.call("GET", "/openapi.json", None, &[], Vec::new()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), "application/json");
    reply.json()
}

/// The schema of `path`'s `method` JSON request body, `$ref` resolved.
fn request_schema<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let schema = &doc["paths"][path][method.to_ascii_lowercase()]["requestBody"]["content"]["application/json"]["schema"];
    match schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")) {
        Some(name) => &doc["components"]["schemas"][name],
        None => schema,
    }
}

fn required(doc: &Value, method: &str, path: &str) -> Vec<String> {
    let schema = request_schema(doc, method, path);
    assert!(schema.is_object(), "{method} {path} has no JSON request schema");
    let mut fields: Vec<String> = schema["required"].as_array().map(|r| r.iter().filter_map(|f| f.as_str().map(str::to_owned)).collect()).unwrap_or_default();
    fields.sort();
    fields
}

#[tokio::test]
async fn openapi_json_is_served_without_a_token_as_openapi_3_1() {
    let gw = Gateway::start().await;
    let doc = document(&gw).await;
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1"), "openapi: {version}");
    assert_eq!(doc["info"]["title"], "Tollgate");
    assert_eq!(gw.call("POST", "/openapi.json", None, &[], Vec::new()).await.status, 405);
    // The security schemes the routes name, and the two error shapes.
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["operator_token"]["scheme"], "bearer");
    assert_eq!(schemes["api_key"]["name"], "x-api-key");
    assert_eq!(doc["paths"]["/v1/messages"]["post"]["security"], json!([{"api_key": []}, {"tenant_token": []}]));
    assert_eq!(doc["paths"]["/admin/v1/tenants"]["post"]["security"], json!([{"operator_token": []}]));
    assert_eq!(doc["paths"]["/v1/tenant/tokens"]["get"]["security"], json!([{"tenant_manage_token": []}]));
    assert_eq!(doc["paths"]["/v1/chat/completions"]["post"]["responses"]["401"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody");
    assert_eq!(doc["paths"]["/v1/messages"]["post"]["responses"]["400"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/AnthropicErrorBody");
    assert!(doc["paths"]["/v1/responses"]["post"]["externalDocs"]["url"].as_str().unwrap_or_default().starts_with("https://platform.openai.com/"));
    assert!(doc["paths"]["/v1/chat/completions"]["post"]["parameters"].as_array().expect("headers").iter().any(|p| p["name"] == "X-Session-ID" && p["in"] == "header"));
    assert_eq!(doc["paths"]["/v1/tenant/policies"]["post"]["requestBody"]["content"]["application/wasm"]["schema"], json!({"type": "string", "contentMediaType": "application/wasm"}));
    // The tenant's copy of a resource takes no tenant id.
    assert_eq!(doc["paths"]["/admin/v1/tenants/{id}/sessions/{session}"]["get"]["parameters"].as_array().map(Vec::len), Some(2));
    assert_eq!(doc["paths"]["/v1/tenant/sessions/{session}"]["get"]["parameters"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn every_route_the_server_answers_is_described_and_only_those() {
    let gw = Gateway::start().await;
    let doc = document(&gw).await;
    let mut described: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            described.push((method.to_ascii_uppercase(), path.clone()));
        }
    }
    described.sort();
    let mut expected = all_routes();
    expected.sort();
    assert_eq!(described, expected);
    assert_eq!(described.len(), 81);

    // The list above is the server's: each route reaches its handler (no 405, no "no
    // route" 404), called with the token it takes and a body missing what it needs.
    gw.admin("POST", "/admin/v1/tenants", json!({"id": "routes"})).await;
    let manage = gw.admin("POST", "/admin/v1/tenants/routes/tokens", json!({"scope": "manage"})).await.json()["token"].as_str().expect("token").to_string();
    for (method, path) in &expected {
        // A manage token also calls models; the operator token everything else.
        let token = if path.starts_with("/v1/") { manage.as_str() } else { ADMIN };
        // Deleting the tenant the other calls use would leave them nothing to reach.
        let id = if method == "DELETE" && path == "/admin/v1/tenants/{id}" { "nobody" } else { "routes" };
        let concrete = path.replace("{id}", id).replace("{hash}", "nohash").replace("{token_id}", "none").replace("{name}", "none").replace("{session}", "none").replace("{key}", "none");
        // An unknown field: every management body refuses it before acting on anything.
        let body = if matches!(method.as_str(), "POST" | "PUT" | "PATCH") { br#"{"openapi_probe": 1}"#.to_vec() } else { Vec::new() };
        let reply = gw.call(method, &concrete, Some(token), &[], body).await;
        let answer: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        let unrouted = reply.status == 404 && (message.starts_with("no route") || message.starts_with("no admin route") || message.starts_with("no tenant resource"));
        assert!(
            !matches!(reply.status, 401 | 403 | 405) && !unrouted,
            "{method} {concrete}: {} {message}",
            reply.status
        );
    }
}

#[tokio::test]
async fn described_required_fields_are_the_ones_the_server_requires() {
    let gw = Gateway::start().await;
    let doc = document(&gw).await;
    gw.admin("POST", "/admin/v1/tenants", json!({"id": "req"})).await;
    let manage = gw.admin("POST", "/admin/v1/tenants/req/tokens", json!({"scope": "manage"})).await.json()["token"].as_str().expect("token").to_string();
    let inference = gw.demo_tenant("req-demo", 10.0).await;

    // (method, path described, path called, token, a body holding exactly the required
    // fields, the status it gets).
    let cases: Vec<(&str, &str, String, &str, Value, u16)> = vec![
        ("POST", "/admin/v1/tenants", "/admin/v1/tenants".into(), ADMIN, json!({"id": "req-min"}), 201),
        ("POST", "/api/v1/tenants", "/api/v1/tenants".into(), ADMIN, json!({"tenant_id": "req-quick", "provider": "demo", "api_key": "sk-x", "model": "demo-small"}), 201),
        ("POST", "/admin/v1/tenants/{id}/tokens", "/admin/v1/tenants/req/tokens".into(), ADMIN, json!({"scope": "inference"}), 201),
        ("PUT", "/v1/tenant/credentials/{name}", "/v1/tenant/credentials/main".into(), &manage, json!({"provider": "demo", "api_key": "sk-y"}), 200),
        ("POST", "/v1/chat/completions", "/v1/chat/completions".into(), &inference, json!({"messages": [{"role": "user", "content": "hi"}]}), 200),
        ("POST", "/v1/embeddings", "/v1/embeddings".into(), &inference, json!({"model": "demo-embed", "input": "hi"}), 200),
        ("POST", "/v1/messages", "/v1/messages".into(), &inference, json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}), 200),
        ("POST", "/v1/messages/count_tokens", "/v1/messages/count_tokens".into(), &inference, json!({"messages": [{"role": "user", "content": "hi"}]}), 200),
        ("POST", "/v1/responses", "/v1/responses".into(), &inference, json!({"input": "hi"}), 200),
    ];
    for (method, described, called, token, body, status) in cases {
        let mut fields = required(&doc, method, described);
        // `model` is optional at the gateway (the tenant's default) but embeddings need
        // the demo embedding model named to succeed.
        let mut sent: Vec<String> = body.as_object().expect("object").keys().filter(|k| *k != "model").cloned().collect();
        sent.sort();
        fields.retain(|f| f != "model");
        assert_eq!(fields, sent, "{method} {described}: described required fields");
        let ok = gw.call(method, &called, Some(token), &[], body.to_string().into_bytes()).await;
        assert_eq!(ok.status, status, "{method} {called} with the required fields only: {}", ok.text());
        for field in &fields {
            let mut missing = body.clone();
            missing.as_object_mut().expect("object").remove(field);
            let reply = gw.call(method, &called, Some(token), &[], missing.to_string().into_bytes()).await;
            assert_eq!(reply.status, 400, "{method} {called} without '{field}': {}", reply.text());
        }
    }
    // `deny_unknown_fields` is described as `additionalProperties: false` and enforced.
    assert_eq!(request_schema(&doc, "PATCH", "/admin/v1/tenants/{id}")["additionalProperties"], false);
    let reply = gw.admin("PATCH", "/admin/v1/tenants/req", json!({"display_name": "x", "colour": "red"})).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
}

const VALIDATE: &str = r#"
import json, sys
from openapi_spec_validator import validate
for path in sys.argv[1:]:
    with open(path) as f:
        spec = json.load(f)
    try:
        validate(spec)
        print("valid")
    except Exception as e:
        print("invalid:", type(e).__name__)
"#;

/// Checks instances against the document's schemas with `jsonschema` (Draft 2020-12, the
/// dialect of OpenAPI 3.1), which the validator's environment holds.
const CONFORM: &str = r##"
import json, sys
import jsonschema
with open(sys.argv[1]) as f:
    doc = json.load(f)
with open(sys.argv[2]) as f:
    checks = json.load(f)
for name, instance in checks:
    schema = {"$ref": "#/components/schemas/" + name, "components": doc["components"]}
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(instance)]
    print(name, "ok" if not errors else errors[0])
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_validator_accepts_the_document_and_rejects_a_broken_ref() {
    let python = crate::support::python_with("py-openapi", VALIDATOR).await;
    let gw = Gateway::start().await;
    let doc = document(&gw).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("openapi.json");
    std::fs::write(&good, doc.to_string()).expect("write");
    let mut broken = doc.clone();
    broken["paths"]["/admin/v1/tenants"]["post"]["responses"]["201"]["content"]["application/json"]["schema"] = json!({"$ref": "#/components/schemas/NoSuchSchema"});
    let bad = dir.path().join("broken.json");
    std::fs::write(&bad, broken.to_string()).expect("write");
    let lines = crate::support::run_python(&python, VALIDATE, &[good.to_str().expect("utf-8"), bad.to_str().expect("utf-8")]).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], "valid");
    assert_eq!(lines[1], "invalid: PointerToNowhere", "the validator resolves every $ref");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_match_the_described_response_schemas() {
    let python = crate::support::python_with("py-openapi", VALIDATOR).await;
    let gw = Gateway::start().await;
    let doc = document(&gw).await;
    let token = gw.demo_tenant("shapes", 10.0).await;
    let chat = gw.chat(&token, json!({"messages": [{"role": "user", "content": "hi"}], "session_id": "s1"})).await;
    assert_eq!(chat.status, 200, "{}", chat.text());
    let manage = gw.admin("POST", "/admin/v1/tenants/shapes/tokens", json!({"scope": "manage"})).await.json()["token"].as_str().expect("token").to_string();
    let get = |path: &'static str, token: String| {
        let gw = &gw;
        async move {
            let reply: Reply = gw.call("GET", path, Some(&token), &[], Vec::new()).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
            reply.json()
        }
    };
    let admin = || ADMIN.to_string();
    let checks = json!([
        ["HealthView", get("/healthz", admin()).await],
        ["TenantView", get("/admin/v1/tenants/shapes", admin()).await],
        ["TenantPageView", get("/admin/v1/tenants", admin()).await],
        ["TokenListView", get("/v1/tenant/tokens", manage.clone()).await],
        ["CredentialListView", get("/v1/tenant/credentials", manage.clone()).await],
        ["PolicyView", get("/v1/tenant/policy", manage.clone()).await],
        ["CandidateView", get("/v1/tenant/policy/candidate", manage.clone()).await],
        ["UploadedPoliciesView", get("/v1/tenant/policies", manage.clone()).await],
        ["UsageView", get("/v1/tenant/usage?group_by=model", manage.clone()).await],
        ["LedgerPageView", get("/v1/tenant/usage/records", manage.clone()).await],
        ["DailyUsageView", get("/v1/tenant/usage/daily", manage.clone()).await],
        ["TopSpendersView", get("/admin/v1/usage/top", admin()).await],
        ["BudgetView", get("/v1/tenant/budget", manage.clone()).await],
        ["SessionListView", get("/v1/tenant/sessions", manage.clone()).await],
        ["SessionView", get("/v1/tenant/sessions/s1", manage.clone()).await],
        ["MemoryView", get("/v1/tenant/memory", manage.clone()).await],
        ["AuditPageView", get("/admin/v1/audit", admin()).await],
        ["Verification", get("/admin/v1/audit/verify", admin()).await],
        ["ModelListView", get("/v1/models", token.clone()).await],
        ["ErrorBody", gw.call("GET", "/v1/models", Some("wrong"), &[], Vec::new()).await.json()],
        ["AnthropicErrorBody", gw.call("POST", "/v1/messages", Some(&token), &[], b"{}".to_vec()).await.json()],
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (doc_path, checks_path) = (dir.path().join("openapi.json"), dir.path().join("checks.json"));
    std::fs::write(&doc_path, doc.to_string()).expect("write");
    std::fs::write(&checks_path, checks.to_string()).expect("write");
    let lines = crate::support::run_python(&python, CONFORM, &[doc_path.to_str().expect("utf-8"), checks_path.to_str().expect("utf-8")]).await;
    let expected: Vec<String> = checks.as_array().expect("array").iter().map(|c| format!("{} ok", c[0].as_str().unwrap_or_default())).collect();
    assert_eq!(lines, expected);
    // The check can fail: a tenant is not a token list.
    let wrong = json!([["TokenListView", get("/admin/v1/tenants/shapes", admin()).await]]);
    std::fs::write(&checks_path, wrong.to_string()).expect("write");
    let lines = crate::support::run_python(&python, CONFORM, &[doc_path.to_str().expect("utf-8"), checks_path.to_str().expect("utf-8")]).await;
    assert_ne!(lines, vec!["TokenListView ok".to_string()]);
}
