//! Decoding of the Kubernetes protobuf envelope for the few built-in kinds kubectl's generator
//! subcommands create (`kubectl create namespace|configmap|secret|serviceaccount|deployment`).

use base64::Engine;
use serde_json::{Map, Value, json};

/// Errors decoding a protobuf body.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The body does not start with the `k8s\0` magic.
    #[error("protobuf body lacks the k8s envelope magic")]
    Magic,
    /// The wire data is truncated or malformed.
    #[error("malformed protobuf data")]
    Malformed,
    /// The kind has no protobuf decoder here.
    #[error("protobuf bodies are not supported for kind {0}")]
    Unsupported(String),
}

struct Reader<'a> {
    b: &'a [u8],
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&byte, rest) = self.b.split_first().ok_or(ProtoError::Malformed)?;
            self.b = rest;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ProtoError::Malformed)
    }

    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, ProtoError> {
        if self.b.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| ProtoError::Malformed)?;
                if len > self.b.len() {
                    return Err(ProtoError::Malformed);
                }
                let (data, rest) = self.b.split_at(len);
                self.b = rest;
                Field::Bytes(data)
            }
            1 => {
                self.b = self.b.get(8..).ok_or(ProtoError::Malformed)?;
                Field::Varint(0)
            }
            5 => {
                self.b = self.b.get(4..).ok_or(ProtoError::Malformed)?;
                Field::Varint(0)
            }
            _ => return Err(ProtoError::Malformed),
        };
        Ok(Some((key >> 3, field)))
    }
}

fn fields(b: &[u8]) -> Result<Vec<(u64, Field<'_>)>, ProtoError> {
    let mut r = Reader { b };
    let mut out = vec![];
    while let Some(f) = r.next()? {
        out.push(f);
    }
    Ok(out)
}

fn string(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A map entry (key = 1, value = 2); `bytes_value` base64-encodes the value.
fn map_entry(b: &[u8], bytes_value: bool) -> Result<(String, String), ProtoError> {
    let mut k = String::new();
    let mut v = String::new();
    for (n, f) in fields(b)? {
        if let Field::Bytes(d) = f {
            match n {
                1 => k = string(d),
                2 if bytes_value => v = base64::engine::general_purpose::STANDARD.encode(d),
                2 => v = string(d),
                _ => {}
            }
        }
    }
    Ok((k, v))
}

fn object_meta(b: &[u8]) -> Result<Value, ProtoError> {
    let mut m = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let mut owners = vec![];
    let mut finalizers = vec![];
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(d)) => put_str(&mut m, "name", d),
            (2, Field::Bytes(d)) => put_str(&mut m, "generateName", d),
            (3, Field::Bytes(d)) => put_str(&mut m, "namespace", d),
            (6, Field::Bytes(d)) => put_str(&mut m, "resourceVersion", d),
            (11, Field::Bytes(d)) => {
                let (k, v) = map_entry(d, false)?;
                labels.insert(k, json!(v));
            }
            (12, Field::Bytes(d)) => {
                let (k, v) = map_entry(d, false)?;
                annotations.insert(k, json!(v));
            }
            (13, Field::Bytes(d)) => {
                let mut o = Map::new();
                for (on, of) in fields(d)? {
                    match (on, of) {
                        (1, Field::Bytes(x)) => o.insert("kind".into(), json!(string(x))),
                        (3, Field::Bytes(x)) => o.insert("name".into(), json!(string(x))),
                        (4, Field::Bytes(x)) => o.insert("uid".into(), json!(string(x))),
                        (5, Field::Bytes(x)) => o.insert("apiVersion".into(), json!(string(x))),
                        (6, Field::Varint(x)) => o.insert("controller".into(), json!(x != 0)),
                        (7, Field::Varint(x)) => {
                            o.insert("blockOwnerDeletion".into(), json!(x != 0))
                        }
                        _ => None,
                    };
                }
                owners.push(Value::Object(o));
            }
            (14, Field::Bytes(d)) => finalizers.push(json!(string(d))),
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    if !owners.is_empty() {
        m.insert("ownerReferences".into(), Value::Array(owners));
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), Value::Array(finalizers));
    }
    Ok(Value::Object(m))
}

/// A varint as the int32/int64 Go encodes (negative numbers are ten-byte two's complement).
fn int(v: u64) -> Value {
    json!(v as i64)
}

/// Inserts a string field unless empty (Go's generated marshallers write every non-pointer
/// string, and JSON's `omitempty` drops the empty ones).
fn put_str(m: &mut Map<String, Value>, k: &str, d: &[u8]) {
    if !d.is_empty() {
        m.insert(k.into(), json!(string(d)));
    }
}

/// apps/v1 DeploymentSpec: replicas, selector, template, strategy and the scalar knobs.
fn deployment_spec(b: &[u8]) -> Result<Value, ProtoError> {
    let mut m = Map::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Varint(v)) => {
                m.insert("replicas".into(), int(v));
            }
            (2, Field::Bytes(d)) => {
                m.insert("selector".into(), label_selector(d)?);
            }
            (3, Field::Bytes(d)) => {
                let mut t = Map::new();
                for (tn, tf) in fields(d)? {
                    match (tn, tf) {
                        (1, Field::Bytes(x)) => {
                            t.insert("metadata".into(), object_meta(x)?);
                        }
                        (2, Field::Bytes(x)) => {
                            t.insert("spec".into(), pod_spec(x)?);
                        }
                        _ => {}
                    }
                }
                m.insert("template".into(), Value::Object(t));
            }
            (4, Field::Bytes(d)) => {
                let mut st = Map::new();
                for (sn, sf) in fields(d)? {
                    match (sn, sf) {
                        (1, Field::Bytes(x)) => put_str(&mut st, "type", x),
                        (2, Field::Bytes(x)) => {
                            let mut ru = Map::new();
                            for (rn, rf) in fields(x)? {
                                match (rn, rf) {
                                    (1, Field::Bytes(y)) => {
                                        ru.insert("maxUnavailable".into(), int_or_string(y)?);
                                    }
                                    (2, Field::Bytes(y)) => {
                                        ru.insert("maxSurge".into(), int_or_string(y)?);
                                    }
                                    _ => {}
                                }
                            }
                            st.insert("rollingUpdate".into(), Value::Object(ru));
                        }
                        _ => {}
                    }
                }
                m.insert("strategy".into(), Value::Object(st));
            }
            (5, Field::Varint(v)) if v != 0 => {
                m.insert("minReadySeconds".into(), int(v));
            }
            (6, Field::Varint(v)) => {
                m.insert("revisionHistoryLimit".into(), int(v));
            }
            (7, Field::Varint(v)) if v != 0 => {
                m.insert("paused".into(), json!(true));
            }
            (9, Field::Varint(v)) => {
                m.insert("progressDeadlineSeconds".into(), int(v));
            }
            _ => {}
        }
    }
    Ok(Value::Object(m))
}

/// intstr.IntOrString: type 0 = intVal, 1 = strVal.
fn int_or_string(b: &[u8]) -> Result<Value, ProtoError> {
    let (mut is_str, mut i, mut s) = (false, 0u64, String::new());
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Varint(v)) => is_str = v == 1,
            (2, Field::Varint(v)) => i = v,
            (3, Field::Bytes(d)) => s = string(d),
            _ => {}
        }
    }
    Ok(if is_str { json!(s) } else { int(i) })
}

/// metav1.LabelSelector.
fn label_selector(b: &[u8]) -> Result<Value, ProtoError> {
    let mut labels = Map::new();
    let mut exprs = vec![];
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(d)) => {
                let (k, v) = map_entry(d, false)?;
                labels.insert(k, json!(v));
            }
            (2, Field::Bytes(d)) => {
                let mut e = Map::new();
                let mut values = vec![];
                for (en, ef) in fields(d)? {
                    match (en, ef) {
                        (1, Field::Bytes(x)) => put_str(&mut e, "key", x),
                        (2, Field::Bytes(x)) => put_str(&mut e, "operator", x),
                        (3, Field::Bytes(x)) => values.push(json!(string(x))),
                        _ => {}
                    }
                }
                if !values.is_empty() {
                    e.insert("values".into(), Value::Array(values));
                }
                exprs.push(Value::Object(e));
            }
            _ => {}
        }
    }
    let mut m = Map::new();
    if !labels.is_empty() {
        m.insert("matchLabels".into(), Value::Object(labels));
    }
    if !exprs.is_empty() {
        m.insert("matchExpressions".into(), Value::Array(exprs));
    }
    Ok(Value::Object(m))
}

/// core/v1 PodSpec: containers and the scalar fields kubectl's generators set.
fn pod_spec(b: &[u8]) -> Result<Value, ProtoError> {
    let mut m = Map::new();
    let mut containers = vec![];
    let mut node_selector = Map::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (2, Field::Bytes(d)) => containers.push(container(d)?),
            (3, Field::Bytes(d)) => put_str(&mut m, "restartPolicy", d),
            (4, Field::Varint(v)) => {
                m.insert("terminationGracePeriodSeconds".into(), int(v));
            }
            (6, Field::Bytes(d)) => put_str(&mut m, "dnsPolicy", d),
            (7, Field::Bytes(d)) => {
                let (k, v) = map_entry(d, false)?;
                node_selector.insert(k, json!(v));
            }
            (8, Field::Bytes(d)) => put_str(&mut m, "serviceAccountName", d),
            (19, Field::Bytes(d)) => put_str(&mut m, "schedulerName", d),
            _ => {}
        }
    }
    if !containers.is_empty() {
        m.insert("containers".into(), Value::Array(containers));
    }
    if !node_selector.is_empty() {
        m.insert("nodeSelector".into(), Value::Object(node_selector));
    }
    Ok(Value::Object(m))
}

/// core/v1 Container: name, image, command, args, workingDir, ports, env, resources,
/// imagePullPolicy, terminationMessage{Path,Policy}.
fn container(b: &[u8]) -> Result<Value, ProtoError> {
    let mut m = Map::new();
    let (mut command, mut args, mut ports, mut env) = (vec![], vec![], vec![], vec![]);
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(d)) => put_str(&mut m, "name", d),
            (2, Field::Bytes(d)) => put_str(&mut m, "image", d),
            (3, Field::Bytes(d)) => command.push(json!(string(d))),
            (4, Field::Bytes(d)) => args.push(json!(string(d))),
            (5, Field::Bytes(d)) => put_str(&mut m, "workingDir", d),
            (6, Field::Bytes(d)) => {
                let mut p = Map::new();
                for (pn, pf) in fields(d)? {
                    match (pn, pf) {
                        (1, Field::Bytes(x)) => put_str(&mut p, "name", x),
                        (2, Field::Varint(v)) if v != 0 => {
                            p.insert("hostPort".into(), int(v));
                        }
                        (3, Field::Varint(v)) => {
                            p.insert("containerPort".into(), int(v));
                        }
                        (4, Field::Bytes(x)) => put_str(&mut p, "protocol", x),
                        (5, Field::Bytes(x)) => put_str(&mut p, "hostIP", x),
                        _ => {}
                    }
                }
                ports.push(Value::Object(p));
            }
            (7, Field::Bytes(d)) => {
                let mut e = Map::new();
                for (en, ef) in fields(d)? {
                    match (en, ef) {
                        (1, Field::Bytes(x)) => put_str(&mut e, "name", x),
                        (2, Field::Bytes(x)) => put_str(&mut e, "value", x),
                        _ => {}
                    }
                }
                env.push(Value::Object(e));
            }
            (8, Field::Bytes(d)) => {
                let mut r = Map::new();
                for (rn, rf) in fields(d)? {
                    let key = match rn {
                        1 => "limits",
                        2 => "requests",
                        _ => continue,
                    };
                    if let Field::Bytes(x) = rf {
                        // map<string, Quantity>; Quantity is a message whose field 1 is the string.
                        let (mut name, mut qty) = (String::new(), String::new());
                        for (qn, qf) in fields(x)? {
                            match (qn, qf) {
                                (1, Field::Bytes(y)) => name = string(y),
                                (2, Field::Bytes(y)) => {
                                    for (vn, vf) in fields(y)? {
                                        if let (1, Field::Bytes(z)) = (vn, vf) {
                                            qty = string(z);
                                        }
                                    }
                                }
                                _ => {}
                            }
                        }
                        if let Value::Object(e) =
                            r.entry(key).or_insert_with(|| Value::Object(Map::new()))
                        {
                            e.insert(name, json!(qty));
                        }
                    }
                }
                m.insert("resources".into(), Value::Object(r));
            }
            (13, Field::Bytes(d)) => put_str(&mut m, "terminationMessagePath", d),
            (14, Field::Bytes(d)) => put_str(&mut m, "imagePullPolicy", d),
            (20, Field::Bytes(d)) => put_str(&mut m, "terminationMessagePolicy", d),
            _ => {}
        }
    }
    for (k, v) in [
        ("command", command),
        ("args", args),
        ("ports", ports),
        ("env", env),
    ] {
        if !v.is_empty() {
            m.insert(k.into(), Value::Array(v));
        }
    }
    Ok(Value::Object(m))
}

/// Decodes a `application/vnd.kubernetes.protobuf` body into the JSON object it encodes.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let rest = body.strip_prefix(b"k8s\0").ok_or(ProtoError::Magic)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(rest)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (tn, tf) in fields(tm)? {
                    match (tn, tf) {
                        (1, Field::Bytes(x)) => api_version = string(x),
                        (2, Field::Bytes(x)) => kind = string(x),
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    if api_version == "apps/v1" && kind == "Deployment" {
        for (n, f) in fields(raw)? {
            match (n, f) {
                (1, Field::Bytes(d)) => {
                    obj.insert("metadata".into(), object_meta(d)?);
                }
                (2, Field::Bytes(d)) => {
                    obj.insert("spec".into(), deployment_spec(d)?);
                }
                _ => {}
            }
        }
        return Ok(Value::Object(obj));
    }
    let supported = api_version == "v1"
        && matches!(
            kind.as_str(),
            "Namespace" | "ConfigMap" | "Secret" | "ServiceAccount"
        );
    if !supported {
        return Err(ProtoError::Unsupported(format!("{api_version}/{kind}")));
    }
    let mut data = Map::new();
    let mut string_data = Map::new();
    let mut ns_finalizers = vec![];
    for (n, f) in fields(raw)? {
        match (kind.as_str(), n, f) {
            (_, 1, Field::Bytes(d)) => {
                obj.insert("metadata".into(), object_meta(d)?);
            }
            ("ConfigMap", 2, Field::Bytes(d)) => {
                let (k, v) = map_entry(d, false)?;
                data.insert(k, json!(v));
            }
            ("ConfigMap", 4, Field::Varint(v)) | ("Secret", 5, Field::Varint(v)) => {
                obj.insert("immutable".into(), json!(v != 0));
            }
            ("Secret", 2, Field::Bytes(d)) => {
                let (k, v) = map_entry(d, true)?;
                data.insert(k, json!(v));
            }
            ("Secret", 3, Field::Bytes(d)) => {
                obj.insert("type".into(), json!(string(d)));
            }
            ("Secret", 4, Field::Bytes(d)) => {
                let (k, v) = map_entry(d, false)?;
                string_data.insert(k, json!(v));
            }
            ("Namespace", 2, Field::Bytes(d)) => {
                for (sn, sf) in fields(d)? {
                    if let (1, Field::Bytes(x)) = (sn, sf) {
                        ns_finalizers.push(json!(string(x)));
                    }
                }
            }
            ("ServiceAccount", 4, Field::Varint(v)) => {
                obj.insert("automountServiceAccountToken".into(), json!(v != 0));
            }
            _ => {}
        }
    }
    if !data.is_empty() {
        obj.insert("data".into(), Value::Object(data));
    }
    if !string_data.is_empty() {
        obj.insert("stringData".into(), Value::Object(string_data));
    }
    if !ns_finalizers.is_empty() {
        obj.insert("spec".into(), json!({"finalizers": ns_finalizers}));
    }
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, data: &[u8]) -> Vec<u8> {
        let mut v = vec![((n << 3) | 2) as u8, data.len() as u8];
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn decodes_a_configmap() {
        let meta = [
            field(1, b"cm"),
            field(11, &[field(1, b"a"), field(2, b"b")].concat()),
        ]
        .concat();
        let raw = [
            field(1, &meta),
            field(2, &[field(1, b"k"), field(2, b"v")].concat()),
        ]
        .concat();
        let unknown = [
            field(1, &[field(1, b"v1"), field(2, b"ConfigMap")].concat()),
            field(2, &raw),
        ]
        .concat();
        let body = [b"k8s\0".to_vec(), unknown].concat();
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "labels": {"a": "b"}}, "data": {"k": "v"}})
        );
        assert!(decode(b"k8s\0\x0a\xff").is_err());
        assert!(decode(b"nope").is_err());
    }
}
