//! Logging for programs that embed weir: weir logs through `tracing`, and a
//! program without a subscriber of its own sees nothing. [`init_from_env`]
//! installs one, as the `weir` command does.

/// Installs a `tracing` subscriber that writes to stderr, filtered by the
/// `WEIR_LOG` environment variable (`RUST_LOG` syntax: `info`,
/// `weir=debug,warn`, ...; `default` when it is unset). Does nothing and
/// returns `false` when the program has installed a subscriber already.
///
/// ```
/// weir::logging::init_from_env("warn");
/// ```
pub fn init_from_env(default: &str) -> bool {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init()
        .is_ok()
}
