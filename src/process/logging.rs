//! What every keelson process logs, and how: `--log-format text|json` and `--log-filter` (in
//! `RUST_LOG` syntax), global flags of every subcommand, also read from `KEELSON_LOG_FORMAT` and
//! `KEELSON_LOG`. Both are exported again once parsed, so the masters and agents `keelson up`
//! starts log as it was told to.

use clap::{Args, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`, spans), for machines.
    Json,
}

/// The logging flags.
#[derive(Args, Debug)]
pub struct LogArgs {
    /// How log lines are written: text, or json (one object per line).
    #[arg(
        long,
        global = true,
        env = "KEELSON_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// What is logged, in `RUST_LOG` syntax: `warn`, `info,keelson::agent=debug`…
    #[arg(
        long,
        global = true,
        env = "KEELSON_LOG",
        default_value = "info,openraft=warn"
    )]
    pub log_filter: String,
}

/// Installs the process's logger on standard error; a filter that does not parse is refused,
/// naming the flag.
pub fn init(args: &LogArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_filter)
        .map_err(|e| anyhow::anyhow!("--log-filter {:?}: {e}", args.log_filter))?;
    use std::io::IsTerminal;
    // Colours for a terminal only: not in log files (`keelson up`'s) or a journal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    // The children of `keelson up` inherit both (called before any thread is started).
    std::env::set_var("KEELSON_LOG", &args.log_filter);
    std::env::set_var(
        "KEELSON_LOG_FORMAT",
        match args.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        },
    );
    Ok(())
}
