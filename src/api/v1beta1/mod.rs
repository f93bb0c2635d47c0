//! The seed's API version, v1beta1: converted to and from the internal model (core/v1 types).

pub mod convert;
