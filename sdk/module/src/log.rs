//! Logging through the broker: the [`info!`](crate::info), [`warn!`](crate::warn),
//! [`error!`](crate::error) and [`debug!`](crate::debug) macros. In a wasm build a line goes to the
//! host's `log` import, which attributes it to the module and bounds how much one call may write.
//! In a native build (the module's own tests) it goes to stderr, or into the
//! [`Outcome`](crate::testing::Outcome) while the test harness runs the module.

use std::cell::RefCell;
use std::fmt;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// Something failed.
    Error,
    /// Something is suspicious.
    Warn,
    /// Normal operation worth noting.
    Info,
    /// Detail for debugging.
    Debug,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        })
    }
}

/// One line a module logged, as the test harness captures it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its severity.
    pub level: Level,
    /// Its text.
    pub message: String,
}

/// Writes one line to the module's log.
pub fn log(level: Level, message: &str) {
    write(level, message);
}

/// What the logging macros call: formats, then [`log`]s.
#[doc(hidden)]
pub fn log_fmt(level: Level, args: fmt::Arguments<'_>) {
    match args.as_str() {
        Some(message) => write(level, message),
        None => write(level, &args.to_string()),
    }
}

#[cfg(target_arch = "wasm32")]
fn write(level: Level, message: &str) {
    use crate::bindings::weir::module::host;
    let level = match level {
        Level::Error => host::Level::Error,
        Level::Warn => host::Level::Warn,
        Level::Info => host::Level::Info,
        Level::Debug => host::Level::Debug,
    };
    host::log(level, message);
}

// Natively there is no host: the bindings' imports are stubs that panic.
#[cfg(not(target_arch = "wasm32"))]
fn write(level: Level, message: &str) {
    let captured = CAPTURE.with_borrow_mut(|capture| match capture {
        Some(lines) => {
            lines.push(LogLine {
                level,
                message: message.to_owned(),
            });
            true
        }
        None => false,
    });
    if !captured {
        eprintln!("[{level}] {message}");
    }
}

thread_local! {
    static CAPTURE: RefCell<Option<Vec<LogLine>>> = const { RefCell::new(None) };
}

/// Collects the lines logged on this thread until the guard is finished or dropped.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) struct Capture {
    previous: Option<Vec<LogLine>>,
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
impl Capture {
    pub(crate) fn start() -> Self {
        Capture {
            previous: CAPTURE.with_borrow_mut(|capture| capture.replace(Vec::new())),
        }
    }

    /// The lines logged since `start`.
    pub(crate) fn finish(mut self) -> Vec<LogLine> {
        let previous = self.previous.take();
        CAPTURE
            .with_borrow_mut(|capture| std::mem::replace(capture, previous))
            .unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CAPTURE.with_borrow_mut(|capture| *capture = previous);
    }
}

/// Logs a line at [`Level::Error`], formatted like `format!`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => {
        $crate::log::log_fmt($crate::log::Level::Error, ::core::format_args!($($arg)+))
    };
}

/// Logs a line at [`Level::Warn`], formatted like `format!`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => {
        $crate::log::log_fmt($crate::log::Level::Warn, ::core::format_args!($($arg)+))
    };
}

/// Logs a line at [`Level::Info`], formatted like `format!`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => {
        $crate::log::log_fmt($crate::log::Level::Info, ::core::format_args!($($arg)+))
    };
}

/// Logs a line at [`Level::Debug`], formatted like `format!`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => {
        $crate::log::log_fmt($crate::log::Level::Debug, ::core::format_args!($($arg)+))
    };
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn capture_collects_lines_in_order() {
        let capture = Capture::start();
        crate::info!("plain");
        crate::warn!("formatted {}", 7);
        log(Level::Debug, "direct");
        let lines = capture.finish();
        assert_eq!(
            lines,
            [
                LogLine {
                    level: Level::Info,
                    message: "plain".into()
                },
                LogLine {
                    level: Level::Warn,
                    message: "formatted 7".into()
                },
                LogLine {
                    level: Level::Debug,
                    message: "direct".into()
                },
            ]
        );
        let dropped = Capture::start();
        crate::error!("gone");
        drop(dropped);
        assert!(Capture::start().finish().is_empty());
    }
}
