# Capstan's two README commands, `make demo` and `make test`, and their parts.
# Every target installs what it needs itself and is safe to run again.

CARGO        ?= cargo
GUEST_TARGET := wasm32-wasip2
TARGET_DIR   := $(or $(CARGO_TARGET_DIR),target)
GUEST_DIR    := $(TARGET_DIR)/$(GUEST_TARGET)/release
# Guest crates built to components (cdylib -> .wasm component via wasm-component-ld).
TEST_GUESTS  := hello-rust guest-cluster-status guest-trap guest-panic guest-loop guest-alloc guest-bad-json guest-big-outcome guest-memo guest-wrong-version guest-wrong-signature host-status host-trap guest-crypto reload-v1 reload-v2 reload-describe-trap workload-nodes
# The Cluster API plugins; `make capi-plugins` also gathers them in one folder for
# `capstan run --plugins` and `capstan simulate --plugins`.
CAPI_PLUGINS := capi-cluster capi-kubeadm-bootstrap capi-kubeadm-control-plane capi-machine capi-infra-devcluster capi-infra-devmachine capi-machinedeployment capi-machineset capi-machinehealthcheck
GUESTS       := $(TEST_GUESTS) $(CAPI_PLUGINS)

export CARGO_TERM_COLOR ?= never

.PHONY: demo test tools guests capi-plugins fmt-check clippy unit controlplane real-tier

## demo: the main job on its embedded default (no cluster needed): Cluster API's
## scale test at 100 clusters, in one process (`capstan simulate`), with its report.
PLUGIN_DIR   := $(TARGET_DIR)/plugins/capi
DEMO_OUT     := $(TARGET_DIR)/simulate-demo
demo: tools capi-plugins
	$(CARGO) build --release -p capstan
	$(TARGET_DIR)/release/capstan simulate --clusters 100 --plugins $(PLUGIN_DIR) --out $(DEMO_OUT)
	@echo "report: $(DEMO_OUT)/report.md"

## capi-plugins: the Cluster API plugin components, gathered in one folder for
## `capstan run --plugins` and `capstan simulate --plugins`.
capi-plugins: tools
	CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo \
		$(CARGO) build --release --target $(GUEST_TARGET) $(addprefix -p ,$(CAPI_PLUGINS))
	@mkdir -p $(PLUGIN_DIR)
	@for p in $(subst -,_,$(CAPI_PLUGINS)); do cp -f $(GUEST_DIR)/$$p.wasm $(PLUGIN_DIR)/$$p.wasm.tmp && mv -f $(PLUGIN_DIR)/$$p.wasm.tmp $(PLUGIN_DIR)/$$p.wasm; done

## test: everything CI checks.
test: tools guests fmt-check unit guest-helpers-test

## tools: toolchain pieces a fresh machine lacks (idempotent).
tools:
	@rustup target list --installed | grep -qx $(GUEST_TARGET) || rustup target add $(GUEST_TARGET)
	@sh apiserver/tools/install-kubectl.sh

## guests: every Rust guest component, release mode (guests need opt-level 3).
# Guests carry no DWARF: line tables quadruple a component (4 MB instead of
# 1 MB), and every load hashes and every compile reads all of it. The name
# section stays, so trap backtraces still name functions. tests/tests/scaffold.rs
# builds with the same two settings to reuse these dependencies: keep them in step.
guests: tools
	CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo \
		$(CARGO) build --release --target $(GUEST_TARGET) $(addprefix -p ,$(GUESTS))
	@$(MAKE) --no-print-directory capi-plugins components

fmt-check:
	$(CARGO) fmt --all -- --check

## clippy: the lints alone (`make test` lints while it builds the tests, see `unit`).
clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# unit: every test of the workspace, linted as `make clippy` lints it. The test
# build runs the workspace's crates through clippy-driver (as `cargo clippy` does,
# but compiling them too), so the dependencies are compiled once: `cargo clippy`
# type-checks all of them a second time (a separate clippy step took 18 min of a
# cold `make test` here, other builds alongside). Lint errors fail the build.
# The same targets as `make clippy`.
CLIPPY_DRIVER := $(shell rustup which clippy-driver 2>/dev/null || echo clippy-driver)
LINTED        := RUSTC_WORKSPACE_WRAPPER=$(CLIPPY_DRIVER) CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
unit:
	$(LINTED) $(CARGO) test --workspace --all-targets --no-run
	$(LINTED) $(CARGO) test --workspace

# --- Real control plane (etcd + kube-apiserver, built from Go modules; tests/controlplane/).
# The binary goes to <cargo target dir>/controlplane/bin/ and is reused while its sources
# are unchanged; Go's module and build caches (GOMODCACHE, GOCACHE) make rebuilds quick.
GO               ?= go
CONTROLPLANE_BIN := $(abspath $(or $(CARGO_TARGET_DIR),target))/controlplane/bin/capstan-controlplane
HAVE_GO          := $(shell command -v $(GO) 2>/dev/null)
# The pinned release (from the generated go.mod), stamped into the binary as kube-apiserver's
# version, as Kubernetes' own build does with -X (else it reports v0.0.0-master).
KUBE_VERSION     := $(shell awk '$$1 == "k8s.io/kubernetes" { print $$2; exit }' tests/controlplane/go.mod)
KUBE_MINOR       := $(word 2,$(subst ., ,$(KUBE_VERSION)))
CONTROLPLANE_LDFLAGS := -s -w \
	-X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 \
	-X k8s.io/component-base/version.gitMinor=$(KUBE_MINOR) \
	-X k8s.io/component-base/version.gitTreeState=clean

## controlplane: build the real control plane binary (needs Go; cold: ~30 s of module downloads + ~14 min on 2 cores).
controlplane: $(CONTROLPLANE_BIN)

$(CONTROLPLANE_BIN): tests/controlplane/go.mod tests/controlplane/go.sum $(wildcard tests/controlplane/*.go)
	@mkdir -p $(dir $@)
	cd tests/controlplane && CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags='$(CONTROLPLANE_LDFLAGS)' -o $@.tmp . && mv $@.tmp $@

# The real tier runs whenever Go is installed, and then must not skip (tests fail if the
# binary is missing); without Go the tests print that they skipped it.
ifneq ($(HAVE_GO),)
export CAPSTAN_CONTROLPLANE_BIN := $(CONTROLPLANE_BIN)
export CAPSTAN_REQUIRE_CONTROLPLANE := 1
real-tier: controlplane
else
real-tier:
	@echo "SKIPPING the real control plane tier: Go is not installed (tests/controlplane needs it)."
endif
unit: real-tier

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
