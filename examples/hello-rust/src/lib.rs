//! hello-rust: labelled ConfigMaps get a derived annotation.
