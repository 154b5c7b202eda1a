//! Test guest `reload-describe-trap`: the hot reload test plugin whose describe() traps (a replacement that must be refused).

const VERSION_CONFIGS: bool = false;
const DESCRIBE_TRAPS: bool = true;

include!("../../reload-v1/src/plugin.rs");
