# Capstan's two README commands, `make demo` and `make test`, and their parts.
# Every target installs what it needs itself and is safe to run again.

CARGO        ?= cargo
GUEST_TARGET := wasm32-wasip2
GUEST_DIR    := target/$(GUEST_TARGET)/release
# Guest crates built to components (cdylib -> .wasm component via wasm-component-ld).
GUESTS       := hello-rust host-status host-trap

export CARGO_TERM_COLOR ?= never

.PHONY: demo test tools guests fmt-check clippy unit

## demo: the main job on its embedded default (no cluster needed).
demo: tools guests
	$(CARGO) run --release -p capstan -- demo --plugins $(GUEST_DIR)

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
