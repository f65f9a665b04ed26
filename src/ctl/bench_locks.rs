//! `sandboxctl bench locks`: acquire + release cycles of the distributed lock, through the gRPC
//! API and through the library call (`lock::Locks`, straight to Redis), at several
//! concurrencies, on distinct keys (each caller its own lock: uncontended) and on one hot key
//! (every caller the same lock: a cycle waits for the holder). `scripts/bench-locks` runs it
//! beside `redis-benchmark` doing `SET NX PX` at the same concurrency.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Args;
use serde_json::json;

use super::{
    Connection,
    stats::{millis, percentile_ms},
};
use crate::{
    config::{RedisConfig, SecretUrl},
    isolation::{RedisNamespace, redis_client::RedisClient},
    lock::Locks,
    proto::{AcquireLockRequest, ReleaseLockRequest},
};

#[derive(Args)]
pub struct LocksArgs {
    /// Concurrent callers, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    concurrency: Vec<usize>,
    /// Measured time per row.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    duration: Duration,
    /// Redis for the library rows (the server's own); without it only gRPC rows run.
    #[arg(long, env = "BENCH_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Grpc,
    Library,
}

pub async fn run(connection: &Connection, args: LocksArgs, json_out: bool) -> anyhow::Result<()> {
    let library = match &args.redis_url {
        Some(url) => {
            let config = RedisConfig {
                url: SecretUrl::new(url),
                pool_size: 128,
                key_prefix: format!("sandboxd-bench:{}:", uuid::Uuid::new_v4().simple()),
                ..RedisConfig::default()
            };
            let client = RedisClient::build(&config)?;
            Some(Locks::new(RedisNamespace::new(client, config.timeout, &config.key_prefix)))
        }
        None => None,
    };
    let mut rows = Vec::new();
    for path in [Path::Grpc, Path::Library] {
        if path == Path::Library && library.is_none() {
            continue;
        }
        for &hot in &[false, true] {
            for &concurrency in &args.concurrency {
                let row =
                    measure(connection, library.clone(), path, hot, concurrency, args.duration)
                        .await?;
                rows.push(row);
            }
        }
    }
    if json_out {
        println!("{}", serde_json::Value::Array(rows.iter().map(Row::json).collect()));
    } else {
        println!(
            "{:<9} {:<13} {:>6} {:>12} {:>9} {:>9}",
            "path", "keys", "conc", "cycles/s", "p50 ms", "p99 ms"
        );
        for row in &rows {
            println!(
                "{:<9} {:<13} {:>6} {:>12.0} {:>9.2} {:>9.2}",
                row.path,
                row.keys,
                row.concurrency,
                row.rate,
                percentile_ms(&row.latencies, 0.5),
                percentile_ms(&row.latencies, 0.99)
            );
        }
    }
    Ok(())
}

struct Row {
    path: &'static str,
    keys: &'static str,
    concurrency: usize,
    rate: f64,
    latencies: Vec<Duration>,
}

impl Row {
    fn json(&self) -> serde_json::Value {
        json!({
            "path": self.path, "keys": self.keys, "concurrency": self.concurrency,
            "cycles_per_second": self.rate,
            "p50_ms": percentile_ms(&self.latencies, 0.5),
            "p99_ms": percentile_ms(&self.latencies, 0.99),
            "max_ms": self.latencies.last().map_or(0.0, |d| millis(*d)),
        })
    }
}

async fn measure(
    connection: &Connection,
    library: Option<Locks>,
    path: Path,
    hot: bool,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Row> {
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let deadline = Instant::now() + duration;
    let library = library.map(Arc::new);
    let mut callers = Vec::new();
    for caller in 0..concurrency {
        let resource =
            if hot { format!("bench:{run_id}:hot") } else { format!("bench:{run_id}:{caller}") };
        let mut client = connection.sync();
        let library = library.clone();
        callers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let started = Instant::now();
                match (&library, path) {
                    (Some(locks), Path::Library) => {
                        let lease = locks
                            .acquire(
                                "bench",
                                &resource,
                                Duration::from_secs(30),
                                Duration::from_secs(30),
                            )
                            .await?;
                        locks.release("bench", &resource, &lease.owner_token).await?;
                    }
                    _ => {
                        let acquire = AcquireLockRequest {
                            resource: resource.clone(),
                            wait: Some(prost_types::Duration { seconds: 30, nanos: 0 }),
                            ..Default::default()
                        };
                        let lease = client.acquire_lock(acquire).await?.into_inner();
                        let release = ReleaseLockRequest {
                            resource: resource.clone(),
                            owner_token: lease.owner_token,
                        };
                        client.release_lock(release).await?;
                    }
                }
                latencies.push(started.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    for caller in callers {
        latencies.extend(caller.await??);
    }
    let elapsed = started.elapsed().max(duration);
    latencies.sort();
    Ok(Row {
        path: if path == Path::Grpc { "grpc" } else { "library" },
        keys: if hot { "one hot key" } else { "distinct keys" },
        concurrency,
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies,
    })
}
