# Capstan's two README commands, `make demo` and `make test`, and their parts.
# Every target installs what it needs itself and is safe to run again.

CARGO        ?= cargo
GUEST_TARGET := wasm32-wasip2
GUEST_DIR    := target/$(GUEST_TARGET)/release
# Guest crates built to components (cdylib -> .wasm component via wasm-component-ld).
GUESTS       := hello-rust guest-cluster-status guest-trap guest-panic guest-loop guest-alloc guest-bad-json guest-big-outcome guest-memo guest-wrong-version

export CARGO_TERM_COLOR ?= never

.PHONY: demo test tools guests fmt-check clippy unit

## demo: the main job on its embedded default (no cluster needed).
demo: tools guests
	$(CARGO) run --release -p capstan -- demo --plugins $(GUEST_DIR)

## test: everything CI checks.
test: tools guests fmt-check clippy unit guest-helpers-test

## tools: toolchain pieces a fresh machine lacks (idempotent).
tools:
	@rustup target list --installed | grep -qx $(GUEST_TARGET) || rustup target add $(GUEST_TARGET)
	@sh apiserver/tools/install-kubectl.sh

## guests: every Rust guest component, release mode (guests need opt-level 3).
guests: tools
	$(CARGO) build --release --target $(GUEST_TARGET) $(addprefix -p ,$(GUESTS))
	@$(MAKE) --no-print-directory components

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace

# --- Guest components of every language, collected in $(COMPONENTS_DIR) for the
# conformance tests (tests/vectors/), benches and `capstan run`. Python and JS
# tools install from PyPI and npm only, pinned by lock files, into project-local
# folders (.cache/venv, examples/hello-js/node_modules); nothing else is fetched.
TARGET_DIR      ?= $(or $(CARGO_TARGET_DIR),target)
COMPONENTS_DIR  := $(TARGET_DIR)/guests
VENV            := .cache/venv
COMPONENTIZE_PY := $(VENV)/bin/componentize-py
JS_TOOLS        := examples/hello-js/node_modules/.package-lock.json
WIT_FILES       := $(wildcard wit/*.wit)
COMPONENTS      := $(addprefix $(COMPONENTS_DIR)/,hello-rust.wasm hello-python.wasm hello-js.wasm)

.PHONY: components py-tools js-tools guest-helpers-test bench-languages

## components: every hello component (Rust, Python, JS) in $(COMPONENTS_DIR).
components: $(COMPONENTS)

py-tools: $(COMPONENTIZE_PY)
js-tools: $(JS_TOOLS)

$(COMPONENTIZE_PY): examples/hello-python/requirements.txt
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes -r $<
	@touch $@

$(JS_TOOLS): examples/hello-js/package-lock.json
	cd examples/hello-js && npm ci --ignore-scripts --no-audit --no-fund

$(COMPONENTS_DIR)/hello-rust.wasm: $(TARGET_DIR)/$(GUEST_TARGET)/release/hello_rust.wasm
	@mkdir -p $(@D)
	cp $< $@

$(COMPONENTS_DIR)/hello-python.wasm: $(COMPONENTIZE_PY) examples/hello-python/app.py $(wildcard guest-sdk/python/capstan_sdk/*.py) $(WIT_FILES)
	@mkdir -p $(@D)
	$(COMPONENTIZE_PY) --quiet -d wit -w reconciler componentize --stub-wasi \
		-p examples/hello-python -p guest-sdk/python app -o $@

# componentize-js resolves relative imports inside its working directory only,
# so it runs from the repository root (hello.js imports ../../guest-sdk/js).
$(COMPONENTS_DIR)/hello-js.wasm: $(JS_TOOLS) examples/hello-js/hello.js guest-sdk/js/capstan-sdk.js $(WIT_FILES)
	@mkdir -p $(@D)
	examples/hello-js/node_modules/.bin/componentize-js examples/hello-js/hello.js --wit wit \
		--world-name reconciler --disable stdio random clocks http fetch-event --out $@

## guest-helpers-test: native tests of the Python and JS guest helpers (no Wasm).
guest-helpers-test:
	python3 -m unittest discover -s guest-sdk/python/tests
	node --test guest-sdk/js/test/

## bench-languages: per-language size, compile, load, reconcile and memory of
## the hello components -> bench/results/languages.{md,json}.
bench-languages: guests
	$(CARGO) run --release -p capstan-bench --bin languages
