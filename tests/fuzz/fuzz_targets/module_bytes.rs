//! Module registration: any bytes offered as a module are refused with an error or compiled,
//! never a panic (seed the corpus with the modules of wasm-modules/).

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use weir_wasm::{ModuleId, Runtime, WasmLimits};

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(WasmLimits::default(), None).expect("a runtime"))
}

fuzz_target!(|data: &[u8]| {
    let id = ModuleId {
        name: "fuzz".into(),
        version: 1,
    };
    let _ = runtime().load(id, data);
});
