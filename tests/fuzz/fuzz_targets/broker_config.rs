//! Configuration files: reading and checking any text never panics, and a configuration that
//! passes the checks yields what start-up derives from it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_server::BrokerConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = toml::from_str::<BrokerConfig>(text) else {
        return;
    };
    if config.validate().is_err() {
        return;
    }
    let _ = config.modules.wasm_limits();
    let _ = config.producers.limits();
    let _ = config.limits.max_request_bytes(&config.modules);
});
