//! The WebAssembly host (`weir-wasm`) on its own, with the real modules of `wasm-modules/`:
//! chains, the sandbox against each hostile behaviour while a healthy chain keeps running,
//! registration errors, the instance pool, and the compiled-module cache.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use weir_abi::AbiError;
use weir_tests::modules;
use weir_types::{Header, Record};
use weir_wasm::{
    Chain, ChainRecord, LogLevel, MAX_CALL_BYTES, MemoryLayout, Module, ModuleError, ModuleId,
    Runtime, Stage, WasmError, WasmLimits,
};

/// Limits for tests: a short time limit (errors are asserted by kind, never by duration), and
/// small memory and output caps so that memory bombs and huge outputs hit them after little
/// work, well within the time limit even on a loaded machine; a small pool.
fn limits() -> WasmLimits {
    WasmLimits {
        call_timeout: Duration::from_millis(500),
        memory_bytes: 16 << 20,
        max_output_bytes: 1 << 20,
        max_instances: 16,
        ..WasmLimits::default()
    }
}

fn runtime() -> Runtime {
    Runtime::new(limits(), None).expect("runtime starts")
}

fn id(name: &str) -> ModuleId {
    ModuleId {
        name: name.into(),
        version: 1,
    }
}

fn wasm(name: &str) -> Vec<u8> {
    let path = modules::path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn load(runtime: &Runtime, name: &str) -> Arc<Module> {
    runtime
        .load(id(name), &wasm(name))
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

fn stage(module: &Arc<Module>, params: &[(&str, &str)]) -> Stage {
    Stage {
        module: module.clone(),
        params: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn records(values: &[&str]) -> Vec<ChainRecord> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| ChainRecord {
            position: 100 + i as u64,
            record: Record {
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Bytes::copy_from_slice(v.as_bytes()),
                headers: vec![Header {
                    key: "h".into(),
                    value: Bytes::from_static(b"hv"),
                }],
                timestamp_ms: 1_700_000_000_000 + i as i64,
                tombstone: false,
            },
        })
        .collect()
}

fn values(output: &[ChainRecord]) -> Vec<String> {
    output
        .iter()
        .map(|r| String::from_utf8_lossy(&r.record.value).into_owned())
        .collect()
}

#[test]
fn stages_run_in_order_with_their_parameters() {
    let runtime = runtime();
    let contains = load(&runtime, "contains");
    let uppercase = load(&runtime, "uppercase");
    let input = records(&["apple", "BANANA", "cherry", "date"]);

    let mut filter_then_map = Chain::new(vec![
        stage(&contains, &[("needle", "a")]),
        stage(&uppercase, &[]),
    ]);
    let output = filter_then_map.run(input.clone()).expect("chain runs");
    assert_eq!(values(&output.records), ["APPLE", "DATE"]);
    // Derived records keep their input's position, key, headers and timestamp.
    assert_eq!(output.records[0].position, 100);
    assert_eq!(output.records[1].position, 103);
    assert_eq!(output.records[1].record.key, input[3].record.key);
    assert_eq!(output.records[1].record.headers, input[3].record.headers);
    assert_eq!(
        output.records[1].record.timestamp_ms,
        input[3].record.timestamp_ms
    );
    assert!(output.rejected.is_empty());

    // The other order: nothing lower-case is left to match.
    let mut map_then_filter = Chain::new(vec![
        stage(&uppercase, &[]),
        stage(&contains, &[("needle", "a")]),
    ]);
    let output = map_then_filter.run(input.clone()).expect("chain runs");
    assert!(output.records.is_empty(), "{:?}", values(&output.records));

    // Parameters reach `init`: another needle, another result.
    let mut other_needle = Chain::new(vec![stage(&contains, &[("needle", "err")])]);
    let output = other_needle.run(input.clone()).expect("chain runs");
    assert_eq!(values(&output.records), ["cherry"]);
    assert_eq!(output.records[0], input[2], "kept records are unchanged");

    // An empty chain passes records through.
    let output = Chain::new(Vec::new())
        .run(input.clone())
        .expect("empty chain");
    assert_eq!(output.records, input);

    let stats = contains.stats();
    assert_eq!(stats.invocations, 3);
    assert_eq!(stats.records_in, 4 + 4 + 4);
    assert_eq!(stats.records_out, 2 + 1);
    assert_eq!(stats.errors, 0);
}

#[test]
fn refused_parameters_fail_at_prepare_naming_the_module() {
    let runtime = runtime();
    let contains = load(&runtime, "contains");
    let mut chain = Chain::new(vec![stage(&contains, &[])]);
    assert!(!chain.is_prepared());
    let err = chain.prepare().expect_err("the needle is required");
    assert!(!chain.is_prepared(), "a refused stage keeps no instance");
    assert_eq!(err.stage, 0);
    assert!(err.error.is_invalid_params(), "{}", err.error);
    assert_eq!(err.error.module(), &id("contains"));
    let text = err.error.to_string();
    assert!(
        text.starts_with("module 'contains@1' refused its parameters: "),
        "{text}"
    );
    assert!(text.contains("needle"), "{text}");
    assert_eq!(contains.stats().errors, 1);

    let mut chain = Chain::new(vec![stage(&contains, &[("needle", "x")])]);
    chain.prepare().expect("valid parameters");
    assert!(chain.is_prepared());
    assert!(
        Chain::new(Vec::new()).is_prepared(),
        "no stage, nothing to prepare"
    );
}

#[test]
fn rejections_name_the_stage_and_carry_the_record_as_it_entered() {
    let runtime = runtime();
    let uppercase = load(&runtime, "uppercase");
    let validate = load(&runtime, "json-validate");
    let mut chain = Chain::new(vec![
        stage(&uppercase, &[]),
        stage(&validate, &[("required", "ID")]),
    ]);
    let input = records(&[r#"{"id":1}"#, "not json", r#"{"other":2}"#]);
    let output = chain.run(input).expect("chain runs");
    assert_eq!(values(&output.records), [r#"{"ID":1}"#]);
    let rejected: Vec<_> = output
        .rejected
        .iter()
        .map(|r| {
            (
                r.position,
                r.stage,
                r.module.clone(),
                String::from_utf8_lossy(&r.record.value).into_owned(),
            )
        })
        .collect();
    assert_eq!(
        rejected,
        [
            (101, 1, id("json-validate"), "NOT JSON".to_owned()),
            (102, 1, id("json-validate"), r#"{"OTHER":2}"#.to_owned()),
        ]
    );
    assert!(output.rejected.iter().all(|r| !r.reason.is_empty()));
    assert!(
        output.rejected[1].reason.contains("ID"),
        "{}",
        output.rejected[1].reason
    );
    assert_eq!(validate.stats().records_rejected, 2);
}

#[test]
fn stage_state_carries_over_between_runs() {
    let runtime = runtime();
    let sum = load(&runtime, "sum");
    let mut chain = Chain::new(vec![stage(&sum, &[])]);
    let first = chain.run(records(&["a", "b"])).expect("first run");
    let second = chain.run(records(&["c"])).expect("second run");
    let count = |r: &ChainRecord| -> u64 {
        let value: serde_json::Value =
            serde_json::from_slice(&r.record.value).expect("sum emits JSON");
        value["count"].as_u64().expect("a count")
    };
    assert_eq!(count(&first.records[1]), 2);
    assert_eq!(count(&second.records[0]), 3);

    // Nothing to process: the module is not called.
    let before = sum.stats().invocations;
    let output = chain.run(Vec::new()).expect("empty run");
    assert!(output.records.is_empty());
    assert_eq!(sum.stats().invocations, before);
}

#[test]
fn an_input_larger_than_an_instance_memory_runs_in_calls_of_bounded_size() {
    let runtime = runtime();
    let contains = load(&runtime, "contains");
    let sum = load(&runtime, "sum");
    // 17 MiB of 1 KiB records, more than an instance's 16 MiB of memory could take in one call,
    // and one record larger than a call's bound, which goes alone.
    let memory = limits().memory_bytes;
    let mut texts: Vec<String> = (0..memory / 1024 + 1024)
        .map(|i| {
            let word = if i % 3 == 0 { "needle" } else { "thread" };
            format!("{i} {word} {}", "x".repeat(1000))
        })
        .collect();
    texts.push(format!("needle {}", "y".repeat(MAX_CALL_BYTES)));
    let input = records(&texts.iter().map(String::as_str).collect::<Vec<_>>());
    let input_bytes: usize = texts.iter().map(String::len).sum();
    assert!(input_bytes > memory);

    let mut chain = Chain::new(vec![
        stage(&contains, &[("needle", "needle")]),
        stage(&sum, &[]),
    ]);
    let output = chain.run(input.clone()).expect("the chain runs");

    let kept: Vec<&ChainRecord> = input
        .iter()
        .filter(|r| r.record.value.windows(6).any(|w| w == b"needle"))
        .collect();
    assert_eq!(kept.len(), texts.len() / 3 + 1);
    assert_eq!(output.records.len(), kept.len());
    for (n, (out, input)) in output.records.iter().zip(&kept).enumerate() {
        assert_eq!(out.position, input.position);
        assert_eq!(out.record.key, input.record.key);
        // The aggregate's state runs on from one call to the next.
        let value: serde_json::Value =
            serde_json::from_slice(&out.record.value).expect("sum emits JSON");
        assert_eq!(value["count"].as_u64(), Some(n as u64 + 1), "{value}");
    }
    assert!(output.rejected.is_empty());
    let calls = contains.stats().invocations;
    assert!(
        calls > (input_bytes / MAX_CALL_BYTES) as u64,
        "{calls} calls for {input_bytes} bytes"
    );
    assert_eq!(contains.stats().records_in, input.len() as u64);

    // A keep-all stage over many calls still reports its inputs untouched.
    let keep_all = load(&runtime, "keep-all");
    let output = Chain::new(vec![stage(&keep_all, &[])])
        .run(input.clone())
        .expect("keep-all runs");
    assert!(output.unchanged);
    assert_eq!(output.records, input);
    assert!(keep_all.stats().invocations > 1);
}

/// Runs `hostile` with `params` in a fresh chain and returns the chain's error.
fn hostile_error(hostile: &Arc<Module>, params: &[(&str, &str)]) -> ModuleError {
    let mut chain = Chain::new(vec![stage(hostile, params)]);
    let err = match chain.prepare() {
        Err(err) => err,
        Ok(()) => chain
            .run(records(&["one", "two"]))
            .expect_err("the hostile module fails"),
    };
    assert_eq!(err.stage, 0);
    assert_eq!(err.error.module(), &id("hostile"));
    assert!(
        err.error.to_string().starts_with("module 'hostile@1' "),
        "{}",
        err.error
    );
    err.error
}

#[test]
fn hostile_modules_are_contained_while_a_healthy_chain_keeps_running() {
    let runtime = runtime();
    let hostile = load(&runtime, "hostile");
    let uppercase = load(&runtime, "uppercase");

    let stop = Arc::new(AtomicBool::new(false));
    let healthy = std::thread::spawn({
        let stop = stop.clone();
        let mut chain = Chain::new(vec![stage(&uppercase, &[])]);
        move || {
            let mut runs = 0u64;
            // At least one run, however fast the hostile side is.
            while runs == 0 || !stop.load(Ordering::Relaxed) {
                let output = chain
                    .run(records(&["still", "fine"]))
                    .expect("the healthy chain never fails");
                assert_eq!(values(&output.records), ["STILL", "FINE"]);
                runs += 1;
            }
            runs
        }
    });

    let limits = limits();
    let err = hostile_error(&hostile, &[("behaviour", "loop")]);
    assert_eq!(
        err,
        ModuleError::Timeout {
            module: id("hostile"),
            limit: limits.call_timeout
        }
    );
    assert_eq!(
        err.to_string(),
        "module 'hostile@1' exceeded its 500 ms time limit per call"
    );

    let err = hostile_error(&hostile, &[("behaviour", "memory")]);
    assert_eq!(
        err,
        ModuleError::OutOfMemory {
            module: id("hostile"),
            limit: limits.memory_bytes
        }
    );
    assert_eq!(
        err.to_string(),
        "module 'hostile@1' exceeded its memory limit of 16 MiB"
    );

    // Rust keeps the hostile module's frames on a shadow stack in linear memory, which runs out
    // before the wasm stack does: an out-of-bounds access rather than a wasm stack overflow.
    let err = hostile_error(&hostile, &[("behaviour", "recursion")]);
    match &err {
        ModuleError::StackOverflow { .. } => {}
        ModuleError::Trap { message, .. } => {
            assert!(message.contains("stack overflow"), "{err}")
        }
        other => panic!("recursion: {other}"),
    }

    let err = hostile_error(&hostile, &[("behaviour", "trap")]);
    assert!(matches!(err, ModuleError::Trap { .. }), "{err}");
    assert!(err.to_string().starts_with("module 'hostile@1' trapped: "));

    let err = hostile_error(
        &hostile,
        &[("behaviour", "huge-output"), ("bytes", "3000000")],
    );
    assert!(
        matches!(
            err,
            ModuleError::OutputTooLarge { size, limit, .. }
                if size > limit && limit == limits.max_output_bytes
        ),
        "{err}"
    );
    assert!(err.to_string().ends_with("over its output limit of 1 MiB"));

    let err = hostile_error(&hostile, &[("behaviour", "bad-output")]);
    assert_eq!(
        err,
        ModuleError::BadOutput {
            module: id("hostile"),
            error: AbiError::UnknownTag { tag: 9, at: 4 }
        }
    );

    let err = hostile_error(&hostile, &[("behaviour", "init-fails")]);
    assert!(err.is_invalid_params(), "{err}");

    let err = hostile_error(&hostile, &[("behaviour", "loop-in-init")]);
    assert!(matches!(err, ModuleError::Timeout { .. }), "{err}");

    stop.store(true, Ordering::Relaxed);
    let runs = healthy.join().expect("the healthy chain's thread");
    assert!(runs > 0);
    assert_eq!(uppercase.stats().errors, 0);
    assert!(hostile.stats().errors >= 8);

    // The runtime itself is unaffected.
    let mut chain = Chain::new(vec![stage(&uppercase, &[])]);
    assert_eq!(
        values(&chain.run(records(&["after"])).expect("runs").records),
        ["AFTER"]
    );
}

#[test]
fn a_failed_stage_is_instantiated_again_on_the_next_run() {
    let runtime = runtime();
    let hostile = load(&runtime, "hostile");
    // Behaves for one call per instance, then traps.
    let mut chain = Chain::new(vec![stage(
        &hostile,
        &[("behaviour", "trap"), ("after", "1")],
    )]);
    chain.run(records(&["a"])).expect("first call behaves");
    let err = chain.run(records(&["b"])).expect_err("second call traps");
    assert!(
        matches!(err.error, ModuleError::Trap { .. }),
        "{}",
        err.error
    );
    // A fresh instance: its first call behaves again.
    let output = chain.run(records(&["c"])).expect("fresh instance behaves");
    assert_eq!(values(&output.records), ["c"]);
}

#[test]
fn instances_that_failed_refuse_further_calls() {
    let runtime = runtime();
    let hostile = load(&runtime, "hostile");
    let mut instance = hostile
        .instantiate(&[("behaviour".into(), "trap".into())])
        .expect("instantiates");
    let err = instance.process(&[0, 0, 0, 0], 0).expect_err("traps");
    assert!(matches!(err, ModuleError::Trap { .. }), "{err}");
    let err = instance.process(&[0, 0, 0, 0], 0).expect_err("unusable");
    assert_eq!(
        err,
        ModuleError::Unusable {
            module: id("hostile")
        }
    );
}

#[test]
fn log_lines_are_bounded_per_call_and_attributed() {
    let runtime = runtime();
    let hostile = load(&runtime, "hostile");
    let mut chain = Chain::new(vec![stage(
        &hostile,
        &[("behaviour", "log-flood"), ("lines", "1000")],
    )]);
    chain.capture_logs(true);
    let output = chain
        .run(records(&["a"]))
        .expect("a log flood is not an error");
    assert_eq!(values(&output.records), ["a"]);
    let logs = chain.take_logs();
    assert!(logs.iter().all(|l| l.module == id("hostile")));
    let bytes: usize = logs[..logs.len() - 1].iter().map(|l| l.message.len()).sum();
    assert!(
        bytes <= limits().max_log_bytes_per_call,
        "{bytes} bytes logged"
    );
    let last = logs.last().expect("a drop notice");
    assert_eq!(last.level, LogLevel::Warn);
    assert!(
        last.message.contains("more log lines dropped"),
        "{}",
        last.message
    );
    let dropped = hostile.stats().log_lines_dropped;
    assert!(dropped > 0 && dropped < 1000, "{dropped} dropped");
    assert!(chain.take_logs().is_empty(), "taking drains");

    // The budget is per call: the next call logs again.
    chain.run(records(&["b"])).expect("second call");
    assert!(chain.take_logs().len() > 1);
}

#[test]
fn fuel_limits_calls_when_enabled() {
    let runtime = Runtime::new(
        WasmLimits {
            fuel_per_call: Some(5_000_000),
            call_timeout: Duration::from_secs(60),
            ..limits()
        },
        None,
    )
    .expect("runtime");
    let hostile = load(&runtime, "hostile");
    let err = hostile_error(&hostile, &[("behaviour", "loop")]);
    assert_eq!(
        err,
        ModuleError::FuelExhausted {
            module: id("hostile"),
            limit: 5_000_000
        }
    );
    assert_eq!(
        err.to_string(),
        "module 'hostile@1' used up its fuel limit of 5000000 units per call"
    );
    // Ordinary work fits in the fuel.
    let keep_all = load(&runtime, "keep-all");
    let mut chain = Chain::new(vec![stage(&keep_all, &[])]);
    assert_eq!(chain.run(records(&["x"])).expect("keeps").records.len(), 1);
}

#[test]
fn a_freed_instance_slot_is_reset_to_the_module_image() {
    // One slot, so every instance below runs in the same linear memory, which its predecessor
    // wrote 2 MiB of (more than the part the host resets in place, the rest is unmapped).
    let runtime = Runtime::new(
        WasmLimits {
            max_instances: 1,
            ..limits()
        },
        None,
    )
    .expect("runtime");
    let hostile = load(&runtime, "hostile");
    for instance in 0..3 {
        let mut chain = Chain::new(vec![stage(&hostile, &[("behaviour", "count-memory")])]);
        let reasons: Vec<String> = (0..2)
            .map(|_| {
                let output = chain.run(records(&["a"])).expect("runs");
                assert!(output.records.is_empty());
                output.rejected[0].reason.clone()
            })
            .collect();
        assert_eq!(
            reasons,
            ["call 1 of this memory", "call 2 of this memory"],
            "instance {instance}"
        );
    }
}

#[test]
fn the_instance_pool_is_bounded_and_slots_come_back() {
    let runtime = Runtime::new(
        WasmLimits {
            max_instances: 2,
            ..limits()
        },
        None,
    )
    .expect("runtime");
    let keep_all = load(&runtime, "keep-all");
    assert_eq!(runtime.instances_in_use(), 0, "loading holds no slot");
    let first = keep_all.instantiate(&[]).expect("slot 1");
    let _second = keep_all.instantiate(&[]).expect("slot 2");
    assert_eq!(runtime.instances_in_use(), 2);
    let err = keep_all.instantiate(&[]).expect_err("pool full");
    assert!(err.is_pool_exhausted(), "{err}");
    assert_eq!(
        err.to_string(),
        "module 'keep-all@1' cannot start: all 2 module instances of this node are in use"
    );
    assert_eq!(
        runtime.instances_in_use(),
        2,
        "a refused instance holds no slot"
    );
    // Loading needs no lasting slot, even with the pool full.
    load(&runtime, "uppercase");
    drop(first);
    assert_eq!(runtime.instances_in_use(), 1);
    keep_all.instantiate(&[]).expect("a slot came back");
}

#[test]
fn the_guard_pages_layout_runs_modules_too() {
    let runtime =
        Runtime::with_memory_layout(limits(), None, MemoryLayout::GuardPages).expect("runtime");
    let contains = load(&runtime, "contains");
    let mut chain = Chain::new(vec![stage(&contains, &[("needle", "b")])]);
    let output = chain.run(records(&["abc", "xyz"])).expect("runs");
    assert_eq!(values(&output.records), ["abc"]);
    let hostile = load(&runtime, "hostile");
    let err = hostile_error(&hostile, &[("behaviour", "memory")]);
    assert!(matches!(err, ModuleError::OutOfMemory { .. }), "{err}");
}

fn cache_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    files.sort();
    files
}

fn runs_keep_all(module: &Arc<Module>) {
    let mut chain = Chain::new(vec![stage(module, &[])]);
    let output = chain.run(records(&["x", "y"])).expect("keep-all runs");
    assert_eq!(values(&output.records), ["x", "y"]);
}

#[test]
fn compiled_modules_are_cached_and_bad_cache_files_recompiled() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("cache");
    let open = || Runtime::new(limits(), Some(dir.clone())).expect("runtime");

    let first = open();
    let module = load(&first, "keep-all");
    assert!(!module.loaded_from_cache());
    assert_eq!(first.cache_stats().compiled, 1);
    runs_keep_all(&module);
    let files = cache_files(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0]
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(name.starts_with(module.sha256()), "{name}");

    // A second runtime (another broker on the same data directory) does not compile.
    let second = open();
    let cached = load(&second, "keep-all");
    assert!(cached.loaded_from_cache());
    assert_eq!(second.cache_stats().hits, 1);
    assert_eq!(second.cache_stats().compiled, 0);
    runs_keep_all(&cached);

    // A corrupted file is detected, never deserialized, and replaced by a fresh compilation.
    let mut bytes = std::fs::read(&files[0]).expect("read cache file");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&files[0], &bytes).expect("corrupt");
    let third = open();
    let recompiled = load(&third, "keep-all");
    assert!(!recompiled.loaded_from_cache());
    let stats = third.cache_stats();
    assert_eq!((stats.hits, stats.rejected, stats.compiled), (0, 1, 1));
    runs_keep_all(&recompiled);

    // So is a truncated one.
    let bytes = std::fs::read(&files[0]).expect("read cache file");
    std::fs::write(&files[0], &bytes[..bytes.len() / 3]).expect("truncate");
    let fourth = open();
    runs_keep_all(&load(&fourth, "keep-all"));
    assert_eq!(fourth.cache_stats().rejected, 1);

    // The rewritten file is valid again.
    let fifth = open();
    assert!(load(&fifth, "keep-all").loaded_from_cache());
    assert_eq!(cache_files(&dir), files);
}

/// A core module importing `module.name` (a function of no arguments) and exporting nothing.
fn core_module_importing(module: &str, name: &str) -> Vec<u8> {
    use wasm_encoder::{EntityType, ImportSection, TypeSection};
    let mut wasm = wasm_encoder::Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], []);
    wasm.section(&types);
    let mut imports = ImportSection::new();
    imports.import(module, name, EntityType::Function(0));
    wasm.section(&imports);
    wasm.finish()
}

/// A component importing an (empty) instance named `import`, if given, and exporting nothing.
fn component_importing(import: Option<&str>) -> Vec<u8> {
    use wasm_encoder::{
        Component, ComponentImportSection, ComponentTypeRef, ComponentTypeSection, InstanceType,
    };
    let mut component = Component::new();
    if let Some(name) = import {
        let mut types = ComponentTypeSection::new();
        types.instance(&InstanceType::new());
        component.section(&types);
        let mut imports = ComponentImportSection::new();
        imports.import(name, ComponentTypeRef::Instance(0));
        component.section(&imports);
    }
    component.finish()
}

#[test]
fn registration_refuses_what_cannot_be_a_weir_module() {
    let runtime = runtime();
    let load_bytes = |bytes: &[u8]| runtime.load(id("bad"), bytes).expect_err("refused");

    let err = load_bytes(b"definitely not wasm");
    assert!(matches!(err, WasmError::NotWasm), "{err}");

    let mut truncated = wasm("keep-all");
    truncated.truncate(truncated.len() / 2);
    let err = load_bytes(&truncated);
    assert!(matches!(err, WasmError::Invalid { .. }), "{err}");

    let small = Runtime::new(
        WasmLimits {
            max_module_bytes: 1000,
            ..limits()
        },
        None,
    )
    .expect("runtime");
    let keep_all = wasm("keep-all");
    let err = small.load(id("big"), &keep_all).expect_err("too large");
    assert!(
        matches!(err, WasmError::TooLarge { size, limit: 1000 } if size == keep_all.len()),
        "{err}"
    );

    let err = load_bytes(&core_module_importing("env", "foo"));
    assert!(
        matches!(&err, WasmError::ForbiddenImport { name } if name == "env.foo"),
        "{err}"
    );
    assert!(err.to_string().contains("`env.foo`"), "{err}");

    let err = load_bytes(&core_module_importing("wasi_snapshot_preview1", "fd_write"));
    assert!(matches!(err, WasmError::ForbiddenImport { .. }), "{err}");

    let err = load_bytes(&component_importing(Some("wasi:cli/environment@0.2.0")));
    assert!(
        matches!(&err, WasmError::ForbiddenImport { name } if name == "wasi:cli/environment@0.2.0"),
        "{err}"
    );

    let err = load_bytes(&component_importing(None));
    assert!(
        matches!(&err, WasmError::MissingExport { name } if name == "weir:module/processor@1.0.0"),
        "{err}"
    );

    // A plain core module with nothing Weir can call (no `component-type` section, no exports).
    let err = load_bytes(&wasm_encoder::Module::new().finish());
    assert!(
        matches!(
            &err,
            WasmError::MissingExport { .. } | WasmError::Invalid { .. }
        ),
        "{err}"
    );

    assert_eq!(runtime.cache_stats().hits, 0);
}

#[test]
fn the_module_tester_runs_a_module_over_lines() {
    use weir_cli::module_test::{self, TestOptions};

    let (mut out, mut err) = (Vec::new(), Vec::new());
    let summary = module_test::run(
        &modules::path("json-validate"),
        vec![("required".into(), "id".into())],
        &b"{\"id\":1}\nnot json\n{\"id\":2}\r\n{}\n"[..],
        &mut out,
        &mut err,
    )
    .expect("the test runs");
    let err = String::from_utf8_lossy(&err);
    assert_eq!(String::from_utf8_lossy(&out), "{\"id\":1}\n{\"id\":2}\n");
    assert!(err.contains("rejected 1: "), "{err}");
    assert!(err.contains("rejected 3: "), "{err}");
    assert_eq!(
        (
            summary.records_in,
            summary.records_out,
            summary.rejected,
            summary.batches
        ),
        (4, 2, 2, 1)
    );
    assert!(
        err.lines()
            .last()
            .is_some_and(|l| l.starts_with("4 records in, 2 out, 2 rejected (1 batch, ")),
        "{err}"
    );

    // Keys, batches and the module's log.
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let options = TestOptions {
        params: vec![
            ("behaviour".into(), "log-flood".into()),
            ("lines".into(), "2".into()),
        ],
        key_separator: Some(b"=".to_vec()),
        batch_size: 2,
        ..TestOptions::default()
    };
    let summary = module_test::run_with(
        &modules::path("hostile"),
        options,
        &b"a=1\nb=2\nc=3\n"[..],
        &mut out,
        &mut err,
    )
    .expect("the test runs");
    assert_eq!(String::from_utf8_lossy(&out), "a=1\nb=2\nc=3\n");
    assert_eq!(summary.batches, 2);
    let err = String::from_utf8_lossy(&err);
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("log warn hostile@0: "))
            .count(),
        4,
        "{err}"
    );

    // A failing module stops the run, naming the module and the lines.
    let failure = module_test::run(
        &modules::path("hostile"),
        vec![("behaviour".into(), "trap".into())],
        &b"x\ny\n"[..],
        Vec::new(),
        Vec::new(),
    )
    .expect_err("the module traps");
    let text = format!("{failure:#}");
    assert!(
        text.starts_with("lines 1-2: module 'hostile@0' trapped"),
        "{text}"
    );

    let refused = module_test::run(
        &modules::path("contains"),
        Vec::new(),
        &b""[..],
        Vec::new(),
        Vec::new(),
    )
    .expect_err("the needle is required");
    assert!(
        format!("{refused:#}").contains("module 'contains@0' refused its parameters"),
        "{refused:#}"
    );
}
