//! Environment variable names the node reads, in one place.

/// Path of the config file, as an alternative to `--config`.
pub const CONFIG_PATH: &str = "SWITCHYARD_CONFIG";
/// Prefix of config overrides: `SWITCHYARD_SERVER__HTTP_LISTEN=0.0.0.0:8080` sets `server.http_listen`.
/// Every variable with this prefix and a [`OVERRIDE_SEPARATOR`] must name a config key: an unknown
/// one is an error, so a misspelt override never goes unnoticed. Prefixed names without a
/// separator (never a key: every key is in a section) are free for secrets, e.g. `SWITCHYARD_COOKIE`.
pub const OVERRIDE_PREFIX: &str = "SWITCHYARD_";
/// Separator of nested keys in overrides.
pub const OVERRIDE_SEPARATOR: &str = "__";
/// Log filter directives, overriding `telemetry.log_level`.
pub const LOG_FILTER: &str = "RUST_LOG";
