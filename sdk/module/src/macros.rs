//! The export macros: one per kind of module. Each defines `WeirModule` (a [`Module`] for the
//! test harness) and the component's `init` and `process` exports in the invoking crate.
//!
//! [`Module`]: crate::Module

/// Exports a filter: `fn(&Record) -> bool`; records for which it returns `false` are dropped.
///
/// ```text
/// weir_module::filter!(keep);                      // fn keep(&Record) -> bool
/// weir_module::filter!(keep, init = setup);        // fn setup(&Params) -> Result<()>
/// weir_module::filter!(keep, config = Cfg::new);   // fn Cfg::new(&Params) -> Result<Cfg>,
///                                                  // fn keep(&Cfg, &Record) -> bool
/// ```
#[macro_export]
macro_rules! filter {
    ($($args:tt)+) => { $crate::__export_kind!(filter, $($args)+); };
}

/// Exports a map: `fn(Record) -> Result<Record>`; an error rejects the record with its message.
///
/// Takes `init = path` or `config = path` like [`filter!`](crate::filter!); with `config`, the
/// function is `fn(&Config, Record) -> Result<Record>`.
#[macro_export]
macro_rules! map {
    ($($args:tt)+) => { $crate::__export_kind!(map, $($args)+); };
}

/// Exports a filter-map: `fn(Record) -> Result<Option<Record>>`; `None` drops the record, an error
/// rejects it with its message.
///
/// Takes `init = path` or `config = path` like [`filter!`](crate::filter!); with `config`, the
/// function is `fn(&Config, Record) -> Result<Option<Record>>`.
#[macro_export]
macro_rules! filter_map {
    ($($args:tt)+) => { $crate::__export_kind!(filter_map, $($args)+); };
}

/// Exports a flat-map: `fn(Record) -> Result<Vec<Record>>`; every returned record replaces the
/// input (none drops it), an error rejects it with its message.
///
/// Takes `init = path` or `config = path` like [`filter!`](crate::filter!); with `config`, the
/// function is `fn(&Config, Record) -> Result<Vec<Record>>`.
#[macro_export]
macro_rules! flat_map {
    ($($args:tt)+) => { $crate::__export_kind!(flat_map, $($args)+); };
}

/// Exports a validator: `fn(&Record) -> Result<(), Reject>`; a [`Reject`](crate::Reject)
/// rejects the record with its reason, which the producer receives.
///
/// Takes `init = path` or `config = path` like [`filter!`](crate::filter!); with `config`, the
/// function is `fn(&Config, &Record) -> Result<(), Reject>`.
#[macro_export]
macro_rules! validate {
    ($($args:tt)+) => { $crate::__export_kind!(validate, $($args)+); };
}

/// Exports an aggregate: `fn(State, &Record) -> State` where `State: Default + ToValue`. Each
/// record is replaced by itself with the new state's [`ToValue`](crate::ToValue) as its value.
/// The state starts from `Default` at init and lives as long as the instance (the broker keeps
/// one per subscription).
///
/// Takes `init = path` or `config = path` like [`filter!`](crate::filter!); with `config`, the
/// function is `fn(&Config, State, &Record) -> State`.
#[macro_export]
macro_rules! aggregate {
    ($($args:tt)+) => { $crate::__export_kind!(aggregate, $($args)+); };
}

/// Exports a raw processor: `fn(&[u8]) -> Result<Vec<u8>>` receives the encoded input batch and
/// returns the encoded outcome (`weir_abi::BatchReader` and `weir_abi::OutcomeWriter`); an error
/// fails the whole call. For modules that need control over the encoding; most want one of the
/// other kinds.
///
/// Takes `init = path` or `config = path` like [`filter!`](crate::filter!); with `config`, the
/// function is `fn(&Config, &[u8]) -> Result<Vec<u8>>`.
#[macro_export]
macro_rules! raw {
    ($($args:tt)+) => { $crate::__export_kind!(raw, $($args)+); };
}

/// Splits the three forms of an export macro's arguments.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_kind {
    (aggregate, $f:expr $(,)?) => {
        $crate::__export!(aggregate, |_params| (), |_config: &(), state, input| ($f)(
            state, input
        ));
    };
    (aggregate, $f:expr, init = $init:expr $(,)?) => {
        $crate::__export!(
            aggregate,
            |params| {
                ($init)(params)?;
            },
            |_config: &(), state, input| ($f)(state, input)
        );
    };
    (aggregate, $f:expr, config = $config:expr $(,)?) => {
        $crate::__export!(
            aggregate,
            |params| ($config)(params)?,
            |config, state, input| ($f)(config, state, input)
        );
    };
    ($kind:ident, $f:expr $(,)?) => {
        $crate::__export!($kind, |_params| (), |_config: &(), input| ($f)(input));
    };
    ($kind:ident, $f:expr, init = $init:expr $(,)?) => {
        $crate::__export!(
            $kind,
            |params| {
                ($init)(params)?;
            },
            |_config: &(), input| ($f)(input)
        );
    };
    ($kind:ident, $f:expr, config = $config:expr $(,)?) => {
        $crate::__export!($kind, |params| ($config)(params)?, |config, input| ($f)(
            config, input
        ));
    };
}

/// Defines `WeirModule` and the component exports for a processor made by
/// `__private::make::$kind` from the init hook's configuration and the adapted function.
#[doc(hidden)]
#[macro_export]
macro_rules! __export {
    ($kind:ident, |$params:ident| $config:expr, $call:expr) => {
        /// This crate's Weir module, as its `weir_module` export macro defines it: pass it to
        /// `weir_module::testing` to run the module in tests.
        pub struct WeirModule;

        impl $crate::Module for WeirModule {
            fn instantiate(
                $params: &$crate::Params,
            ) -> $crate::Result<::std::boxed::Box<dyn $crate::__private::Processor>> {
                #[allow(clippy::let_unit_value, clippy::unit_arg)]
                let config = $config;
                ::core::result::Result::Ok($crate::__private::make::$kind(config, $call))
            }
        }

        // Native builds (the module's own tests) have no host to export to, and the canonical-ABI
        // export names (`weir:module/processor@1.0.0#process`) are not valid native symbols.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct Exports;

            impl $crate::__private::Guest for Exports {
                fn init(
                    params: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::export_init::<WeirModule>(params)
                }

                fn process(
                    batch: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    $crate::__private::export_process(batch)
                }
            }

    $crate::__export_module_impl!(Exports with_types_in $crate::__private::bindings);
        };
    };
}
