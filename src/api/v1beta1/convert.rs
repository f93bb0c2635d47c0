//! v1beta1 ↔ internal (core/v1) conversion. Being written.
