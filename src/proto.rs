//! Code generated from `proto/sandboxd/v1/*.proto`.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("sandboxd.v1");

/// Descriptors of our services, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sandboxd_descriptor");
