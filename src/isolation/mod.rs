//! Isolation of sandbox resources outside PostgreSQL (the schema DDL lives in the store).

pub mod redis_namespace;

pub use redis_namespace::RedisNamespace;
