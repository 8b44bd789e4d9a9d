//! Helpers shared by the suite.

use std::sync::Arc;

use tollgate::catalog::Catalog;
use tollgate::metering::Metering;
use tollgate::policy::{ChatRequest, Context, Message, PolicyLimits};
use tollgate::sealing::{Key, Vault};
use tollgate::tenant_scope::{ScopeServices, TenantScope};
use tollgate::{PolicyRuntime, Store};

/// A policy runtime over a temporary store, with the services a tenant scope needs.
pub struct Sandbox {
    pub runtime: PolicyRuntime,
    pub services: ScopeServices,
    pub store: Store,
}

impl Sandbox {
    pub fn new(limits: PolicyLimits) -> Self {
        let store = Store::temporary().expect("temporary store");
        let vault = Arc::new(Vault::new(store.clone(), Key::random()).expect("vault"));
        let services = ScopeServices {
            vault,
            metering: Metering::new(store.clone()),
            catalog: Arc::new(Catalog::new(&[])),
            store: store.clone(),
            memory_quota_bytes: limits.memory_quota_bytes,
            log_lines_kept: limits.log_lines_kept,
        };
        let runtime = PolicyRuntime::new(limits, store.clone()).expect("runtime");
        Self { runtime, services, store }
    }

    pub fn scope(&self, tenant: &str) -> Arc<TenantScope> {
        Arc::new(self.services.scope(tenant, None, tollgate::clock::unix_millis()))
    }
}

pub fn request(model: &str) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        messages: vec![Message { role: "user".into(), text: "hello".into(), image_count: 0, tool_call_count: 0 }],
        max_tokens: None,
        temperature: None,
        stream: false,
        tool_count: 0,
        end_user: None,
        metadata: Vec::new(),
        prompt_token_estimate: 2,
    }
}

pub fn context(tenant: &str, config: &str) -> Context {
    Context {
        tenant_id: tenant.into(),
        request_id: format!("req-{tenant}"),
        session_id: None,
        unix_millis: tollgate::clock::unix_millis(),
        config: config.into(),
    }
}
