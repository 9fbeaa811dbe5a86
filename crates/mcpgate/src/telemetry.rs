//! Logging: text or JSON on stderr (stdout belongs to the stdio transport).

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(level: &str, format: LogFormat) {
    // rmcp logs several `info` lines per stateless request (a service starts and ends for each):
    // at the default level they outnumbered mcpgate's own lines 3 to 2 and cost ~20-40 % of the
    // CPU of a call. Quiet unless the filter names rmcp itself (`MCP_LOG_LEVEL=info,rmcp=info`).
    let directives = if level.contains("rmcp") {
        level.to_owned()
    } else {
        // Never louder than the global level (`off`, `error`).
        let quiet = match level.split(',').next().map(str::trim) {
            Some(l) if l.eq_ignore_ascii_case("off") => "off",
            Some(l) if l.eq_ignore_ascii_case("error") => "error",
            _ => "warn",
        };
        format!("{level},rmcp={quiet}")
    };
    let filter =
        EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn"));
    // Colours only for a person at a terminal: a log file or collector gets plain text, and
    // every audit line is cheaper to format and write.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second init (tests running several servers in one process) is harmless.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
