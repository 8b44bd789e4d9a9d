//! The reports the console draws: a tenant's spend per day per model or provider
//! (`.../usage/daily`), the operator's top spenders (`/admin/v1/usage/top`) and tenant
//! search (`/admin/v1/tenants?q=`), checked against the ledger records of real requests.

use serde_json::{json, Value};
use tollgate::metering::day_of;

use crate::support::{Gateway, ADMIN};

async fn get(gw: &Gateway, path: &str, token: &str) -> crate::support::Reply {
    gw.call("GET", path, Some(token), &[], Vec::new()).await
}

async fn chats(gw: &Gateway, token: &str, n: usize) {
    for i in 0..n {
        let reply = gw.chat(token, json!({"model": "demo-small", "messages": [{"role": "user", "content": format!("question {i}")}]})).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}

async fn manage_token(gw: &Gateway, tenant: &str) -> String {
    let reply = gw.admin("POST", &format!("/admin/v1/tenants/{tenant}/tokens"), json!({"scope": "manage"})).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()["token"].as_str().expect("token").to_string()
}

#[tokio::test]
async fn daily_usage_has_every_day_and_one_series_per_model_matching_the_ledger() {
    daily_usage_matches_the_ledger(&Gateway::start().await).await;
}

#[tokio::test]
async fn the_operator_sees_top_spenders_and_a_tenant_sees_only_its_own_report() {
    top_spenders_and_isolation(&Gateway::start().await).await;
}

/// The same reports from PostgreSQL's rollups (their own SQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reports_read_the_same_from_postgres() {
    let Some(server) = tollgate_tests::postgres::Server::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::serving(crate::support::shared_gateway(&server, dir.path()).await).await;
    daily_usage_matches_the_ledger(&gw).await;
    top_spenders_and_isolation(&gw).await;
}

async fn daily_usage_matches_the_ledger(gw: &Gateway) {
        let token = gw.demo_tenant("daily", 10.0).await;
    chats(gw, &token, 3).await;
    let now = tollgate::clock::unix_millis();
    let (first, last) = (day_of(now - 2 * 86_400_000), day_of(now + 86_400_000));
    let daily = get(gw, &format!("/admin/v1/tenants/daily/usage/daily?start={first}&end={last}"), ADMIN).await;
    assert_eq!(daily.status, 200, "{}", daily.text());
    let daily = daily.json();
    let days: Vec<String> = serde_json::from_value(daily["days"].clone()).expect("days");
    assert_eq!(days.len(), 4, "{days:?}");
    assert_eq!((days[0].as_str(), days[3].as_str()), (first.as_str(), last.as_str()));

    // What the ledger says each day cost.
    let records = get(gw, &format!("/admin/v1/tenants/daily/usage/records?start={first}&end={last}"), ADMIN).await.json();
    let records = records["data"].as_array().expect("records").clone();
    assert_eq!(records.len(), 3);
    let mut expected_cost = vec![0u64; days.len()];
    for record in &records {
        let day = day_of(record["unix_millis"].as_u64().expect("time"));
        let index = days.iter().position(|d| *d == day).expect("the record's day is in range");
        expected_cost[index] += record["cost_microdollars"].as_u64().expect("cost");
    }
    assert!(expected_cost.iter().sum::<u64>() > 0, "demo-small is priced");
    let series = daily["series"].as_array().expect("series");
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(series[0]["key"], "demo/demo-small");
    assert_eq!(series[0]["cost_microdollars"], json!(expected_cost));
    assert_eq!(series[0]["requests"].as_array().expect("requests").iter().filter_map(Value::as_u64).sum::<u64>(), 3);

    let by_provider = get(gw, &format!("/admin/v1/tenants/daily/usage/daily?start={first}&end={last}&group_by=provider"), ADMIN).await.json();
    assert_eq!(by_provider["series"][0]["key"], "demo");
    assert_eq!(by_provider["series"][0]["cost_microdollars"], json!(expected_cost));

    let bad = get(gw, "/admin/v1/tenants/daily/usage/daily?group_by=user", ADMIN).await;
    assert_eq!((bad.status, bad.error_code()), (400, "invalid_group_by".to_string()));
    let too_long = get(gw, "/admin/v1/tenants/daily/usage/daily?start=2020-01-01&end=2026-01-01", ADMIN).await;
    assert_eq!((too_long.status, too_long.error_code()), (400, "invalid_date".to_string()));
}

async fn top_spenders_and_isolation(gw: &Gateway) {
        let big = gw.demo_tenant("big", 10.0).await;
    let small = gw.demo_tenant("small", 10.0).await;
    gw.demo_tenant("idle", 10.0).await;
    chats(gw, &big, 3).await;
    chats(gw, &small, 1).await;
    let range = "start=2000-01-01&end=2100-12-31";

    let top = get(gw, &format!("/admin/v1/usage/top?{range}"), ADMIN).await;
    assert_eq!(top.status, 200, "{}", top.text());
    let top = top.json();
    let ids: Vec<&str> = top["data"].as_array().expect("data").iter().filter_map(|r| r["tenant_id"].as_str()).collect();
    // (On a shared gateway other tests' tenants spend too.)
    let ours: Vec<&str> = ids.iter().copied().filter(|id| ["big", "small", "idle"].contains(id)).collect();
    assert_eq!(ours, ["big", "small"], "most spent first; a tenant that spent nothing is absent");
    let costs: Vec<u64> = top["data"].as_array().expect("data").iter().filter_map(|r| r["cost_microdollars"].as_u64()).collect();
    assert!(costs.windows(2).all(|w| w[0] >= w[1]), "{costs:?}");
    for row in top["data"].as_array().expect("data") {
        let id = row["tenant_id"].as_str().expect("id");
        let usage = get(gw, &format!("/admin/v1/tenants/{id}/usage?{range}"), ADMIN).await.json();
        assert_eq!(row["cost_microdollars"], usage["cost_microdollars"], "{id}");
        assert_eq!(row["requests"], usage["requests"], "{id}");
    }
    let one = get(gw, &format!("/admin/v1/usage/top?{range}&limit=1"), ADMIN).await.json();
    assert_eq!(one["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(one["data"][0]["cost_microdollars"], top["data"][0]["cost_microdollars"]);

    // A tenant's manage token reads its own daily report and nothing of the operator's
    // or another tenant's.
    let manage = manage_token(gw, "small").await;
    let own = get(gw, &format!("/v1/tenant/usage/daily?{}", "start=2026-01-01&end=2026-12-31"), &manage).await;
    assert_eq!(own.status, 200, "{}", own.text());
    assert_eq!(own.json()["tenant_id"], "small");
    for path in ["/admin/v1/usage/top", "/admin/v1/tenants", "/admin/v1/tenants/big/usage/daily", "/admin/v1/tenants/big/usage/records"] {
        let reply = get(&gw, path, &manage).await;
        assert!(matches!(reply.status, 401 | 403), "{path}: {} {}", reply.status, reply.text());
        assert!(!reply.text().contains("\"big\""), "{path}: {}", reply.text());
    }
}

#[tokio::test]
async fn tenants_are_searched_by_id_or_display_name_case_insensitively() {
    let gw = Gateway::start().await;
    for (id, name) in [("acme-east", "Acme East"), ("acme-west", "Acme West"), ("globex", "Globex Corp")] {
        let reply = gw.admin("POST", "/admin/v1/tenants", json!({"id": id, "display_name": name})).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
    let ids = |reply: Value| -> Vec<String> { reply["data"].as_array().expect("data").iter().filter_map(|t| t["id"].as_str().map(str::to_owned)).collect() };
    assert_eq!(ids(get(&gw, "/admin/v1/tenants?q=acme", ADMIN).await.json()), ["acme-east", "acme-west"]);
    assert_eq!(ids(get(&gw, "/admin/v1/tenants?q=WEST", ADMIN).await.json()), ["acme-west"]);
    // By display name, with a percent-encoded space.
    assert_eq!(ids(get(&gw, "/admin/v1/tenants?q=globex%20corp", ADMIN).await.json()), ["globex"]);
    assert!(ids(get(&gw, "/admin/v1/tenants?q=initech", ADMIN).await.json()).is_empty());
    // Paging still applies within a search.
    assert_eq!(ids(get(&gw, "/admin/v1/tenants?q=acme&after=acme-east", ADMIN).await.json()), ["acme-west"]);
    assert_eq!(get(&gw, "/admin/v1/tenants", ADMIN).await.json()["total"], 3);
}
