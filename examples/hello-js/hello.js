//! hello-js: ConfigMaps labelled `capstan.dev/hello=true` get a greeting and a data digest.
//
// The same reconciler as examples/hello-rust, held to the same conformance
// vectors (tests/vectors/hello/); see README.md.

import { Outcome, TerminalError, gvk, log, permission, pluginInfo, run } from '../../guest-sdk/js/capstan-sdk.js';

const VERSION = '0.1.0';
/** The label that opts a ConfigMap in. */
export const LABEL = 'capstan.dev/hello';
/** The greeting annotation. */
export const GREETING = 'capstan.dev/hello-greeting';
/** The status-like annotation: a digest of the data the greeting was made for. */
export const OBSERVED = 'capstan.dev/hello-observed';

const utf8 = new TextEncoder();

function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/** FNV-1a (64-bit) over each data entry in key order as `key 0x00 value 0x00`, 16 hex digits. */
export function dataDigest(data) {
  // Order keys by their UTF-8 bytes, as Rust's BTreeMap<String, _> does
  // (JavaScript's default sort compares UTF-16 code units).
  const entries = Object.entries(data).map(([k, v]) => [utf8.encode(k), utf8.encode(v)]);
  entries.sort((x, y) => compareBytes(x[0], y[0]));
  // 64-bit state as two uint32 halves (a BigInt per byte was 1.4x slower
  // in StarlingMonkey's interpreter). prime = 2^40 + 0x1b3, so
  // h * prime = h * 0x1b3 + (lo << 40), carried into the high half.
  let lo = 0x84222325;
  let hi = 0xcbf29ce4;
  for (const [k, v] of entries) {
    for (const part of [k, [0], v, [0]]) {
      for (const b of part) {
        lo = (lo ^ b) >>> 0;
        const m = lo * 0x1b3; // < 2^41: exact in a double
        hi = (Math.imul(hi, 0x1b3) + (lo << 8) + Math.floor(m / 0x100000000)) >>> 0;
        lo = m >>> 0;
      }
    }
  }
  return hi.toString(16).padStart(8, '0') + lo.toString(16).padStart(8, '0');
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** obj[key] when of type `kind`, `fallback` when absent; anything else is terminal. */
function field(obj, key, kind, fallback, where) {
  if (!Object.hasOwn(obj, key)) return fallback;
  const value = obj[key];
  const ok = kind === 'object' ? isObject(value) : typeof value === kind;
  if (!ok) throw new TerminalError(`primary object does not parse: ${where}${key} is not a ${kind}`);
  return value;
}

function stringMap(obj, key, where) {
  const value = field(obj, key, 'object', {}, where);
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string') throw new TerminalError(`primary object does not parse: ${where}${key}.${k} is not a string`);
  }
  return value;
}

function reconcileHello(snapshot) {
  const cm = snapshot.primary;
  const meta = field(cm, 'metadata', 'object', {}, '');
  const name = field(meta, 'name', 'string', '', 'metadata.');
  const namespace = field(meta, 'namespace', 'string', '', 'metadata.');
  const labels = stringMap(meta, 'labels', 'metadata.');
  const annotations = stringMap(meta, 'annotations', 'metadata.');
  const deleting = meta.deletionTimestamp !== undefined && meta.deletionTimestamp !== null;
  const data = stringMap(cm, 'data', '');

  const outcome = new Outcome();
  if (labels[LABEL] !== 'true' || deleting) return outcome;
  const greeting = `hello, ${name}`;
  const observed = dataDigest(data);
  if (annotations[GREETING] === greeting && annotations[OBSERVED] === observed) return outcome;
  log.info(`greeting ${namespace}/${name}`);
  return outcome.apply({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name, namespace, annotations: { [GREETING]: greeting, [OBSERVED]: observed } },
  });
}

/** Export `describe` of the reconciler world. */
export function describe() {
  const configmap = gvk('', 'v1', 'ConfigMap');
  return pluginInfo('hello', VERSION, configmap, {
    permissions: [permission(configmap, { patch: true })],
    concurrency: 2,
  });
}

/** Export `reconcile` of the reconciler world. */
export function reconcile(snapshot) {
  return run(reconcileHello, snapshot);
}
