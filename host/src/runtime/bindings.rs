//! The one host-side binding of the WIT contract (`wit/`); everything else imports from here.

wasmtime::component::bindgen!({
    world: "reconciler",
    path: "../wit",
});
