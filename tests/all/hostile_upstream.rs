//! A compromised or broken upstream: nothing it sends back carries the tenant's key to the
//! client, whole or in part, and an answer built to blow up parsing is refused.

use tollgate::upstream::MAX_UPSTREAM_BODY_BYTES;
use tollgate_tests::mock::MockUpstream;

use crate::mocked::{self, KINDS};
use crate::support::Gateway;

const KEY: &str = "sk-straddle-7f3a9c2e5b1d4f60a8c3";

/// Every 8-byte run of [`KEY`] that appears in `text`.
fn key_fragments(text: &str) -> Vec<&'static str> {
    (0..=KEY.len() - 8).map(|i| &KEY[i..i + 8]).filter(|run| text.contains(run)).collect()
}

#[tokio::test]
async fn a_key_straddling_the_error_message_cut_is_redacted_first_for_every_kind() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(mocked::config(&mock)).await;
    for kind in KINDS {
        let token = mocked::tenant(&gw, &format!("echo-{}", kind.name), kind.name, KEY).await;
        // The key straddles byte 512 of the upstream's error message.
        let reply = gw.chat(&token, mocked::chat("mock-echokey", "Hello")).await;
        assert_eq!((reply.status, reply.error_code().as_str()), (502, "upstream_auth_failed"), "{}: {}", kind.name, reply.text());
        assert!(reply.json()["error"]["message"].as_str().unwrap_or("").starts_with(&format!("{}: xxxx", kind.name)), "{}: the message is kept", kind.name);
        assert_eq!(key_fragments(&reply.text()), Vec::<&str>::new(), "{}: {}", kind.name, reply.text());
    }
}

#[tokio::test]
async fn a_key_in_an_error_event_mid_stream_never_reaches_the_client_for_every_kind() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(mocked::config(&mock)).await;
    for kind in KINDS {
        let token = mocked::tenant(&gw, &format!("echo-{}", kind.name), kind.name, KEY).await;
        let reply = gw.chat(&token, mocked::streamed(mocked::chat("mock-echokey", "Hello"), true)).await;
        assert_eq!(reply.status, 200, "{}: {}", kind.name, reply.text());
        assert!(mocked::sse_data(&reply).len() > 1, "{}: {}", kind.name, reply.text());
        assert_eq!(key_fragments(&reply.text()), Vec::<&str>::new(), "{}: {}", kind.name, reply.text());
    }
}

#[tokio::test]
async fn an_answer_built_to_amplify_parsing_is_refused_with_502_for_every_kind() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(mocked::config(&mock)).await;
    // Just under the body cap: about 16 million `0` elements.
    let model = format!("mock-bloat={}", MAX_UPSTREAM_BODY_BYTES - 4096);
    for kind in KINDS {
        let token = mocked::tenant(&gw, &format!("bloat-{}", kind.name), kind.name, "sk-bloat").await;
        let reply = gw.chat(&token, mocked::chat(&model, "Hello")).await;
        assert_eq!((reply.status, reply.error_code().as_str()), (502, "upstream_bad_response"), "{}: {}", kind.name, &reply.text()[..reply.text().len().min(300)]);
        let message = reply.json()["error"]["message"].as_str().unwrap_or("").to_string();
        assert!(message.contains("bytes to parse"), "{}: {message}", kind.name);
    }
}
