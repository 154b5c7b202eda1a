//! Test guest `reload-v1`: version 1.0.0 of the hot reload test plugin (stamps its version into every write).

const VERSION_CONFIGS: bool = false;
const DESCRIBE_TRAPS: bool = false;

include!("plugin.rs");
