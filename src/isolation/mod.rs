//! Isolation of sandbox resources outside PostgreSQL (the schema DDL lives in the store).

pub mod config;
pub mod credentials;
pub mod redis_acl;
pub mod redis_client;
pub mod redis_keyspace;
pub mod redis_namespace;
pub mod redis_pool;
pub mod redis_tls;

pub use redis_namespace::RedisNamespace;
