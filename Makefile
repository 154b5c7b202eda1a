# Capstan's two README commands, `make demo` and `make test`, and their parts.
# Every target installs what it needs itself and is safe to run again.

CARGO        ?= cargo
GUEST_TARGET := wasm32-wasip2
TARGET_DIR   := $(or $(CARGO_TARGET_DIR),target)
GUEST_DIR    := $(TARGET_DIR)/$(GUEST_TARGET)/release
# Guest crates built to components (cdylib -> .wasm component via wasm-component-ld).
GUESTS       := hello-rust guest-cluster-status guest-trap guest-panic guest-loop guest-alloc guest-bad-json guest-big-outcome guest-memo guest-wrong-version

export CARGO_TERM_COLOR ?= never

.PHONY: demo test tools guests fmt-check clippy unit

## demo: the main job on its embedded default (no cluster needed). Until
## `capstan simulate` exists: inspect the hello plugin, then run one
## reconcile of a sample snapshot through the runtime and print the outcome.
demo: tools guests
	$(CARGO) build -p capstan
	$(TARGET_DIR)/debug/capstan plugin inspect $(GUEST_DIR)/hello_rust.wasm
	$(TARGET_DIR)/debug/capstan plugin run $(GUEST_DIR)/hello_rust.wasm --snapshot examples/hello-rust/snapshot.json

## test: everything CI checks.
test: tools guests fmt-check clippy unit

## tools: toolchain pieces a fresh machine lacks (idempotent).
tools:
	@rustup target list --installed | grep -qx $(GUEST_TARGET) || rustup target add $(GUEST_TARGET)
	@sh apiserver/tools/install-kubectl.sh

## guests: every Rust guest component, release mode (guests need opt-level 3).
guests: tools
	$(CARGO) build --release --target $(GUEST_TARGET) $(addprefix -p ,$(GUESTS))

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace
