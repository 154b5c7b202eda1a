//! Test guest `reload-v2`: version 2.0.0 of the hot reload test plugin; also watches and relates labelled ConfigMaps.

const VERSION_CONFIGS: bool = true;
const DESCRIBE_TRAPS: bool = false;

include!("../../reload-v1/src/plugin.rs");
