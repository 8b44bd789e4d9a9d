//! Tollgate's end-to-end suite, built into one binary (one link, shared helpers).

mod mocked;
mod support;
mod sweep;

mod gateway;
mod http_limits;
mod openai_sdk;
mod openapi;
mod policy_sandbox;
mod policy_upload;
mod policy_contract;
mod stock_policies;
mod tenancy;
mod conformance;
mod fallback;
mod hostile_upstream;
mod stream_relay;
mod canary;
mod shutdown;
mod noisy;
mod budgets;
mod embeddings;
mod messages;
mod responses;
mod anthropic_sdk;
mod identity;
mod postgres_budgets;
mod postgres_tenants;
mod postgres_sessions_memory;
mod postgres_audit_policies;
mod postgres_vault;
mod usage_reports;
mod console;
mod policy_languages;
mod policy_candidates;
mod policy_replay;
