//! Every unary RPC of the client API, fed to a real broker started in this process: any bytes
//! as any request get a status, never a panic (libFuzzer aborts on a panic in any thread, the
//! broker's included), and the broker keeps serving.
//!
//! The first byte picks the RPC; the rest is the request message as sent on the wire.

#![no_main]

use std::sync::{Mutex, OnceLock};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use weir_tests::{InProcessBroker, RawGrpc, UNARY_RPCS};

/// How long one request may take before the target moves on.
const CALL_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

struct Target {
    runtime: tokio::runtime::Runtime,
    client: Mutex<RawGrpc>,
    _broker: InProcessBroker,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let (broker, client) = runtime.block_on(async {
            let broker = InProcessBroker::start().await.expect("a broker");
            let client = RawGrpc::connect(&broker.url()).await.expect("a connection");
            (broker, client)
        });
        Target {
            runtime,
            client: Mutex::new(client),
            _broker: broker,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, message)) = data.split_first() else {
        return;
    };
    let rpc = UNARY_RPCS[which as usize % UNARY_RPCS.len()];
    let target = target();
    let mut client = target.client.lock().expect("not poisoned");
    target.runtime.block_on(async {
        let path = format!("/weir.v1.Broker/{rpc}");
        // Long polls (a Fetch that waits for records, a JoinGroup that waits for a rebalance)
        // may outlast the budget; that is not a failure.
        let _ = tokio::time::timeout(
            CALL_BUDGET,
            client.unary(&path, Bytes::copy_from_slice(message)),
        )
        .await;
        let alive = client
            .unary("/weir.v1.Broker/ListTopics", Bytes::new())
            .await;
        assert!(
            alive.is_ok(),
            "the broker stopped serving after {rpc}: {alive:?}"
        );
    });
});
