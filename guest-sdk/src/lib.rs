//! Capstan's guest SDK: write a reconciler in Rust and build it to a component.
