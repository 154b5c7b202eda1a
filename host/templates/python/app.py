"""{{name}}: a Capstan reconciler in Python (scaffolded by `capstan plugin new --lang python`).

It starts as the hello reconciler: ConfigMaps labelled `capstan.dev/hello=true`
get a greeting and a digest of their data, and it passes Capstan's conformance
vectors (tests/vectors/hello/) as generated. Change describe() and reconcile()
to make it yours; README.md says how to build and test.
"""

from capstan_sdk import Outcome, Snapshot, TerminalError, gvk, log, permission, plugin_info, run
import wit_world
from wit_world.imports import types

NAME = "{{name}}"
VERSION = "0.1.0"
LABEL = "capstan.dev/hello"
GREETING = "capstan.dev/hello-greeting"
OBSERVED = "capstan.dev/hello-observed"


def data_digest(data):
    """FNV-1a (64-bit) over each data entry in key order as `key 0x00 value 0x00`, 16 hex digits."""
    h = 0xCBF29CE484222325
    for k in sorted(data):
        for b in k.encode() + b"\0" + data[k].encode() + b"\0":
            h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def _field(obj, key, kind, default, where):
    """obj[key] when of type `kind`, `default` when absent; anything else is terminal."""
    if key not in obj:
        return default
    if not isinstance(obj[key], kind):
        raise TerminalError(f"primary object does not parse: {where}{key} is not a {kind.__name__}")
    return obj[key]


def _string_map(obj, key, where):
    value = _field(obj, key, dict, {}, where)
    for k, v in value.items():
        if not isinstance(v, str):
            raise TerminalError(f"primary object does not parse: {where}{key}.{k} is not a string")
    return value


def reconcile(snapshot: Snapshot) -> Outcome:
    cm = snapshot.primary
    meta = _field(cm, "metadata", dict, {}, "")
    name = _field(meta, "name", str, "", "metadata.")
    namespace = _field(meta, "namespace", str, "", "metadata.")
    labels = _string_map(meta, "labels", "metadata.")
    annotations = _string_map(meta, "annotations", "metadata.")
    data = _string_map(cm, "data", "")

    outcome = Outcome()
    if labels.get(LABEL) != "true" or meta.get("deletionTimestamp") is not None:
        return outcome
    greeting = f"hello, {name}"
    observed = data_digest(data)
    if annotations.get(GREETING) == greeting and annotations.get(OBSERVED) == observed:
        return outcome
    log.info(f"greeting {namespace}/{name}")
    return outcome.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "annotations": {GREETING: greeting, OBSERVED: observed},
            },
        }
    )


class WitWorld(wit_world.WitWorld):
    """The component's exports, as componentize-py expects them."""

    def describe(self) -> types.PluginInfo:
        configmap = gvk("", "v1", "ConfigMap")
        return plugin_info(NAME, VERSION, configmap, permissions=[permission(configmap, patch=True)], concurrency=2)

    def reconcile(self, snapshot: types.Snapshot) -> types.Outcome:
        return run(reconcile, snapshot)
