//! The `weir:module@1.0.0` world (sdk/wit/weir-module.wit) as the host checks it: what a module
//! may import, what it must export, and with which types.
//!
//! Checks run twice, for clear messages at each level: on a core module's imports before it is
//! componentized (so `env.foo` or WASI is named as such), and on the compiled component's type
//! (so a component built from another WIT is refused at registration, not at its first call).

use wasmparser::{Parser, Payload, Validator};
use wasmtime::Engine;
use wasmtime::component::types::{self, ComponentFunc, ComponentItem, Type};

use crate::error::WasmError;

/// The one interface a module may import.
pub(crate) const HOST_INTERFACE: &str = "weir:module/host@1.0.0";
/// The interface a module must export.
pub(crate) const PROCESSOR_INTERFACE: &str = "weir:module/processor@1.0.0";
/// The host function.
pub(crate) const LOG: &str = "log";
/// The exported functions.
pub(crate) const INIT: &str = "init";
/// The exported functions.
pub(crate) const PROCESS: &str = "process";

/// Each function's type as [`render_func`] writes it.
const LOG_TYPE: &str = "func(enum { error, warn, info, debug }, string)";
const INIT_TYPE: &str = "func(list<tuple<string, string>>) -> result<_, string>";
const PROCESS_TYPE: &str = "func(list<u8>) -> result<list<u8>, string>";

/// What kind of WebAssembly binary some bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Binary {
    /// A core module (what `cargo build --target wasm32-unknown-unknown` produces).
    Core,
    /// A component.
    Component,
}

/// Tells a core module from a component by its preamble.
pub(crate) fn classify(bytes: &[u8]) -> Result<Binary, WasmError> {
    if Parser::is_component(bytes) {
        Ok(Binary::Component)
    } else if Parser::is_core_wasm(bytes) {
        Ok(Binary::Core)
    } else {
        Err(WasmError::NotWasm)
    }
}

/// Refuses a core module that does not validate, or that imports anything but the host
/// interface. Validating first also protects the componentizer, which assumes a well-formed
/// module.
pub(crate) fn check_core(bytes: &[u8]) -> Result<(), WasmError> {
    let invalid = |e: wasmparser::BinaryReaderError| WasmError::Invalid {
        source: Box::new(e),
    };
    Validator::new().validate_all(bytes).map_err(invalid)?;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            Payload::ImportSection(section) => {
                for import in section.into_imports() {
                    let import = import.map_err(invalid)?;
                    if import.module != HOST_INTERFACE || import.name != LOG {
                        return Err(WasmError::ForbiddenImport {
                            name: format!("{}.{}", import.module, import.name),
                        });
                    }
                }
                // The import section comes before everything else that matters here.
                return Ok(());
            }
            Payload::CodeSectionStart { .. } => return Ok(()),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a compiled component against the world: its imports are at most the host interface's
/// `log`, and it exports the processor's `init` and `process` with their WIT types.
pub(crate) fn check_component(
    engine: &Engine,
    component: &types::Component,
) -> Result<(), WasmError> {
    for (name, import) in component.imports(engine) {
        if name != HOST_INTERFACE {
            return Err(WasmError::ForbiddenImport {
                name: name.to_owned(),
            });
        }
        let ComponentItem::ComponentInstance(host) = import.ty else {
            return Err(WasmError::ForbiddenImport {
                name: name.to_owned(),
            });
        };
        for (item, ty) in host.exports(engine) {
            match ty.ty {
                // The interface's `level` enum.
                ComponentItem::Type(_) => {}
                ComponentItem::ComponentFunc(func) if item == LOG => {
                    expect_type(&format!("{HOST_INTERFACE}#{LOG}"), &func, LOG_TYPE)?;
                }
                _ => {
                    return Err(WasmError::ForbiddenImport {
                        name: format!("{HOST_INTERFACE}#{item}"),
                    });
                }
            }
        }
    }

    let missing = |name: String| WasmError::MissingExport { name };
    let processor = component
        .get_export(engine, PROCESSOR_INTERFACE)
        .ok_or_else(|| missing(PROCESSOR_INTERFACE.to_owned()))?;
    let ComponentItem::ComponentInstance(processor) = processor.ty else {
        return Err(missing(PROCESSOR_INTERFACE.to_owned()));
    };
    for (func, expected) in [(INIT, INIT_TYPE), (PROCESS, PROCESS_TYPE)] {
        let name = format!("{PROCESSOR_INTERFACE}#{func}");
        match processor.get_export(engine, func).map(|e| e.ty) {
            Some(ComponentItem::ComponentFunc(ty)) => expect_type(&name, &ty, expected)?,
            _ => return Err(missing(name)),
        }
    }
    Ok(())
}

fn expect_type(name: &str, func: &ComponentFunc, expected: &str) -> Result<(), WasmError> {
    let found = render_func(func);
    if found == expected {
        Ok(())
    } else {
        Err(WasmError::WrongType {
            name: name.to_owned(),
            found,
            expected: expected.to_owned(),
        })
    }
}

/// A function type in WIT-like syntax, without parameter names (they do not affect the ABI).
fn render_func(func: &ComponentFunc) -> String {
    let params: Vec<String> = func.params().map(|(_, ty)| render(&ty)).collect();
    let results: Vec<String> = func.results().map(|ty| render(&ty)).collect();
    let prefix = if func.async_() { "async func" } else { "func" };
    match results.as_slice() {
        [] => format!("{prefix}({})", params.join(", ")),
        [one] => format!("{prefix}({}) -> {one}", params.join(", ")),
        many => format!("{prefix}({}) -> ({})", params.join(", "), many.join(", ")),
    }
}

/// A value type in WIT-like syntax.
fn render(ty: &Type) -> String {
    let opt = |t: Option<Type>| t.map_or_else(|| "_".to_owned(), |t| render(&t));
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(list) => format!("list<{}>", render(&list.ty())),
        Type::Tuple(tuple) => {
            let items: Vec<String> = tuple.types().map(|t| render(&t)).collect();
            format!("tuple<{}>", items.join(", "))
        }
        Type::Option(option) => format!("option<{}>", render(&option.ty())),
        Type::Result(result) => match (result.ok(), result.err()) {
            (None, None) => "result".into(),
            (ok, None) => format!("result<{}>", opt(ok)),
            (ok, err) => format!("result<{}, {}>", opt(ok), opt(err)),
        },
        Type::Enum(e) => format!("enum {{ {} }}", e.names().collect::<Vec<_>>().join(", ")),
        Type::Flags(f) => format!("flags {{ {} }}", f.names().collect::<Vec<_>>().join(", ")),
        Type::Record(r) => {
            let fields: Vec<String> = r
                .fields()
                .map(|f| format!("{}: {}", f.name, render(&f.ty)))
                .collect();
            format!("record {{ {} }}", fields.join(", "))
        }
        Type::Variant(v) => {
            let cases: Vec<String> = v
                .cases()
                .map(|c| match c.ty {
                    Some(t) => format!("{}({})", c.name, render(&t)),
                    None => c.name.to_owned(),
                })
                .collect();
            format!("variant {{ {} }}", cases.join(", "))
        }
        Type::Own(_) => "own<resource>".into(),
        Type::Borrow(_) => "borrow<resource>".into(),
        _ => "<unsupported type>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core_module(imports: &[(&str, &str)]) -> Vec<u8> {
        use wasm_encoder::{EntityType, ImportSection, Module, TypeSection};
        let mut module = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([], []);
        module.section(&types);
        let mut section = ImportSection::new();
        for (m, n) in imports {
            section.import(m, n, EntityType::Function(0));
        }
        module.section(&section);
        module.finish()
    }

    #[test]
    fn binaries_are_told_apart_by_their_preamble() {
        assert_eq!(classify(&core_module(&[])).ok(), Some(Binary::Core));
        let component = wasm_encoder::Component::new().finish();
        assert_eq!(classify(&component).ok(), Some(Binary::Component));
        assert!(matches!(classify(b"hello"), Err(WasmError::NotWasm)));
        assert!(matches!(classify(b""), Err(WasmError::NotWasm)));
    }

    #[test]
    fn core_imports_are_limited_to_the_host_log() {
        assert!(check_core(&core_module(&[])).is_ok());
        assert!(check_core(&core_module(&[(HOST_INTERFACE, LOG)])).is_ok());
        let err = check_core(&core_module(&[(HOST_INTERFACE, LOG), ("env", "foo")]))
            .expect_err("env import");
        assert!(
            matches!(&err, WasmError::ForbiddenImport { name } if name == "env.foo"),
            "{err}"
        );
        let err = check_core(&core_module(&[("wasi_snapshot_preview1", "fd_write")]))
            .expect_err("wasi import");
        assert!(err.to_string().contains("wasi_snapshot_preview1.fd_write"));
        let err = check_core(&core_module(&[(HOST_INTERFACE, "exit")]))
            .expect_err("unknown host function");
        assert!(err.to_string().contains("weir:module/host@1.0.0.exit"));
    }

    #[test]
    fn truncated_modules_are_invalid_not_a_panic() {
        let module = core_module(&[(HOST_INTERFACE, LOG)]);
        // The import section is the last one; the empty module's is 3 bytes long.
        let imports_start = core_module(&[]).len() - 3;
        for len in 0..module.len() {
            let result = check_core(&module[..len]);
            if len > imports_start {
                assert!(
                    matches!(result, Err(WasmError::Invalid { .. })),
                    "truncated to {len}: {result:?}"
                );
            }
        }
    }
}
