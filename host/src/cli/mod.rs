//! Implementations of the `capstan` subcommands (main.rs only parses and dispatches).

pub mod plugin;
