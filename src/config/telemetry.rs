//! Logs: their format and filter.

use super::Environment;
use super::reader::Reader;
use super::values::LogFormat;

#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `spike=debug,sqlx=warn`.
    pub log_level: String,
}

impl TelemetrySettings {
    pub(super) fn read(r: &mut Reader<'_>, env: Environment) -> Option<TelemetrySettings> {
        r.section("Logs");
        let default_format = if env == Environment::Dev {
            LogFormat::Pretty
        } else {
            LogFormat::Json
        };
        let log_format = r.choice("log_format", "`json` or `pretty`", default_format);
        r.default_is("`pretty` in dev, `json` elsewhere", "pretty");
        let log_level = r.text(
            "log_level",
            "`tracing` filter, e.g. `info,spike=debug,sqlx=warn`",
            "info",
        );
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            r.problem("log_level", e);
        }
        Some(TelemetrySettings {
            log_format: log_format?,
            log_level,
        })
    }
}
