//! Tracing setup: human-readable logs by default, JSON lines with `--log-format json`.
//!
//! Spans: the controller opens `reconcile{plugin, key, result}` per reconcile with child
//! spans `snapshot`, `call` and one `write{verb, kind, object}` per request; JSON logs
//! carry the current span and its parents on every line, so each log line of a reconcile
//! names its plugin and key. `RUST_LOG` overrides the default filter (`info`).

use std::str::FromStr;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = TelemetryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" | "human" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(TelemetryError::Format(other.to_string())),
        }
    }
}

/// Errors setting up telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// Unknown `--log-format`.
    #[error("unknown log format {0:?} (expected text or json)")]
    Format(String),
    /// A global subscriber is already installed.
    #[error("tracing subscriber already installed")]
    AlreadyInstalled,
}

/// Install the global subscriber.
pub fn init(format: LogFormat) -> Result<(), TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_span_events(FmtSpan::CLOSE)
            .try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadyInstalled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse() {
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("text".parse::<LogFormat>().unwrap(), LogFormat::Text);
        assert!("yaml".parse::<LogFormat>().is_err());
    }
}
