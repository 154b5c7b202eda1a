//! An in-memory Kubernetes API server that kube-rs and kubectl cannot tell from the real one.
