//! What `bench resolve` measured, and its printing: one row per RPC, then the ratios the
//! benchmark's goals are stated in.

use std::time::Duration;

use serde_json::{Value, json};

use super::ResolveArgs;
use crate::ctl::stats::percentile_ms;

pub(super) struct Measured {
    pub(super) rpc: &'static str,
    pub(super) requests: usize,
    pub(super) errors: usize,
    pub(super) elapsed: Duration,
    /// Sorted once every slice is in.
    pub(super) latencies: Vec<Duration>,
}

impl Measured {
    pub(super) fn new(rpc: &'static str) -> Self {
        Measured { rpc, requests: 0, errors: 0, elapsed: Duration::ZERO, latencies: Vec::new() }
    }

    /// Adds one slice's figures.
    pub(super) fn add(&mut self, slice: Measured) {
        self.requests += slice.requests;
        self.errors += slice.errors;
        self.elapsed += slice.elapsed;
        self.latencies.extend(slice.latencies);
    }

    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn p99(&self) -> f64 {
        percentile_ms(&self.latencies, 0.99)
    }

    fn json(&self) -> Value {
        json!({"rpc": self.rpc, "requests": self.requests, "errors": self.errors,
               "req_per_s": self.rate(), "p50_ms": percentile_ms(&self.latencies, 0.50),
               "p99_ms": self.p99(), "p999_ms": percentile_ms(&self.latencies, 0.999)})
    }
}

/// `bare` is the bare tonic server's Health/Check, `noop` sandboxd's.
pub(super) fn report(
    args: &ResolveArgs,
    bare: Option<&Measured>,
    noop: &Measured,
    resolve: &Measured,
    json: bool,
) {
    let throughput_ratio = resolve.rate() / noop.rate();
    let p99_ratio = resolve.p99() / noop.p99();
    let resolve_vs_bare = bare.map(|bare| resolve.rate() / bare.rate());
    let health_vs_bare = bare.map(|bare| noop.rate() / bare.rate());
    if json {
        let report = json!({"concurrency": args.concurrency, "guilds": args.guilds,
                            "connections": args.connections, "duration_s": args.duration.as_secs_f64(),
                            "rounds": args.rounds,
                            "bare": bare.map(Measured::json), "noop": noop.json(),
                            "resolve": resolve.json(), "throughput_ratio": throughput_ratio,
                            "p99_ratio": p99_ratio, "resolve_vs_bare": resolve_vs_bare,
                            "health_vs_bare": health_vs_bare});
        println!("{report:#}");
        return;
    }
    println!(
        "concurrency {}, {} mapped guilds, {} connection(s), {:?} per RPC in {} slice(s)",
        args.concurrency, args.guilds, args.connections, args.duration, args.rounds
    );
    println!(
        "{:<28} {:>10} {:>8} {:>9} {:>9} {:>9}",
        "RPC", "req/s", "errors", "p50 ms", "p99 ms", "p999 ms"
    );
    for m in bare.into_iter().chain([noop, resolve]) {
        println!(
            "{:<28} {:>10.0} {:>8} {:>9.3} {:>9.3} {:>9.3}",
            m.rpc,
            m.rate(),
            m.errors,
            percentile_ms(&m.latencies, 0.50),
            m.p99(),
            percentile_ms(&m.latencies, 0.999)
        );
    }
    println!(
        "throughput ratio {throughput_ratio:.2} (goal >= 0.80)   p99 ratio {p99_ratio:.2} (goal <= 1.50)"
    );
    if let (Some(resolve_vs_bare), Some(health_vs_bare)) = (resolve_vs_bare, health_vs_bare) {
        println!(
            "vs the bare tonic server: ResolveGuild {resolve_vs_bare:.2}x (goal >= 0.80), \
             sandboxd Health/Check {health_vs_bare:.2}x"
        );
    }
}
