//! What `sandboxctl bench claims` measured, as tables and JSON.

use super::*;
pub(super) use crate::ctl::stats::millis;

/// Figures of one warm or cold level.
pub(super) struct Rounds {
    pub(super) template: String,
    pub(super) concurrency: usize,
    pub(super) mode: GiveBack,
    pub(super) rounds: u32,
    /// Sum of the rounds' create times.
    pub(super) measured: Duration,
    pub(super) tally: Tally,
    pub(super) returned: Returned,
}

impl Rounds {
    pub(super) fn creates_per_second(&self) -> f64 {
        let seconds = self.measured.as_secs_f64();
        if seconds > 0.0 { self.tally.creates() as f64 / seconds } else { 0.0 }
    }

    /// The latencies of the kind this level is about: pool hits when there were any.
    pub(super) fn main_latencies(&self) -> &[Duration] {
        if self.tally.from_pool.is_empty() {
            &self.tally.provisioned
        } else {
            &self.tally.from_pool
        }
    }

    pub(super) fn json(&self) -> Value {
        json!({
            "template": self.template,
            "concurrency": self.concurrency,
            "give_back": self.mode.name(),
            "rounds": self.rounds,
            "creates": self.tally.creates(),
            "from_pool": self.tally.from_pool.len(),
            "provisioned": self.tally.provisioned.len(),
            "measured_seconds": self.measured.as_secs_f64(),
            "creates_per_second": self.creates_per_second(),
            "from_pool_ms": latency_json(&self.tally.from_pool),
            "provisioned_ms": latency_json(&self.tally.provisioned),
            "all_ms": latency_json(&self.tally.all()),
            "errors": self.tally.errors,
            "first_errors": self.tally.first_error,
            "given_back": returned_json(&self.returned),
        })
    }
}

pub(super) fn print_rounds_header() {
    println!(
        "{:>11} {:>6} {:>7} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>12}  errors",
        "concurrency",
        "rounds",
        "creates",
        "from_pool",
        "creates/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "max ms",
        "given back s"
    );
}

pub(super) fn print_rounds_row(level: &Rounds) {
    let latencies = level.main_latencies();
    println!(
        "{:>11} {:>6} {:>7} {:>9} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>12.1}  {}",
        level.concurrency,
        level.rounds,
        level.tally.creates(),
        level.tally.from_pool.len(),
        level.creates_per_second(),
        percentile_ms(latencies, 0.50),
        percentile_ms(latencies, 0.99),
        percentile_ms(latencies, 0.999),
        latencies.last().copied().map(millis).unwrap_or(0.0),
        level.returned.elapsed.as_secs_f64(),
        errors_text(&level.tally, &level.returned),
    );
}

pub(super) struct Burst {
    pub(super) sizes: Vec<usize>,
    pub(super) elapsed: Vec<Duration>,
    pub(super) tally: Tally,
    pub(super) returned: Returned,
}

impl Burst {
    pub(super) fn print(&self) {
        let all = self.tally.all();
        let sizes: Vec<String> = self.sizes.iter().map(ToString::to_string).collect();
        let walls: Vec<String> =
            self.elapsed.iter().map(|wall| format!("{:.1}", millis(*wall))).collect();
        println!("\nbursts of simultaneous creates (as many as the pool held ready):");
        println!(
            "  {} bursts of {} calls; {} of {} answered from the pool",
            self.sizes.len(),
            sizes.join("/"),
            self.tally.from_pool.len(),
            self.tally.creates()
        );
        println!(
            "  latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; burst done after {} ms; errors {}",
            percentile_ms(&all, 0.50),
            percentile_ms(&all, 0.99),
            all.last().copied().map(millis).unwrap_or(0.0),
            walls.join("/"),
            errors_text(&self.tally, &self.returned)
        );
    }

    pub(super) fn json(&self) -> Value {
        json!({
            "sizes": self.sizes,
            "elapsed_ms": self.elapsed.iter().copied().map(millis).collect::<Vec<_>>(),
            "creates": self.tally.creates(),
            "from_pool": self.tally.from_pool.len(),
            "all_ms": latency_json(&self.tally.all()),
            "from_pool_ms": latency_json(&self.tally.from_pool),
            "errors": self.tally.errors,
            "first_errors": self.tally.first_error,
            "given_back": returned_json(&self.returned),
        })
    }
}

/// One agent of the steady loop.
#[derive(Default)]
pub(super) struct SteadyAgent {
    pub(super) cycles: usize,
    pub(super) tally: Tally,
    pub(super) release: Vec<Duration>,
    pub(super) returned: Returned,
}

impl SteadyAgent {
    /// claim → GetSandbox → ReleaseSandbox.
    pub(super) async fn cycle(&mut self, client: &mut Client, template: &str) {
        let sent = Instant::now();
        let outcome = create(client, template).await;
        self.tally.record(sent.elapsed(), &outcome);
        let Ok((sandbox_id, _)) = outcome else {
            // Do not spin on a server that refuses every request.
            tokio::time::sleep(Duration::from_millis(10)).await;
            return;
        };
        let get = GetSandboxRequest { selector: Some(Selector::SandboxId(sandbox_id.clone())) };
        if let Err(status) = client.get_sandbox(get).await {
            self.tally.error(&status);
        }
        let released = Instant::now();
        return_one(client, sandbox_id, GiveBack::Release, &mut self.returned).await;
        self.release.push(released.elapsed());
        self.cycles += 1;
    }
}

pub(super) struct Steady {
    pub(super) cycles: usize,
    pub(super) elapsed: Duration,
    pub(super) tally: Tally,
    pub(super) release: Vec<Duration>,
    pub(super) returned: Returned,
    pub(super) before: PoolStatus,
    pub(super) after: PoolStatus,
    pub(super) ready_samples: Vec<i32>,
}

impl Steady {
    pub(super) fn hits(&self) -> i64 {
        self.after.hits - self.before.hits
    }

    pub(super) fn misses(&self) -> i64 {
        self.after.misses - self.before.misses
    }

    pub(super) fn reuse_rate(&self) -> f64 {
        let creates = self.hits() + self.misses();
        if creates > 0 { self.hits() as f64 / creates as f64 } else { 0.0 }
    }

    pub(super) fn cycles_per_second(&self) -> f64 {
        self.cycles as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    pub(super) fn print(&self, agents: u32) {
        let all = self.tally.all();
        let (min, max) = min_max(&self.ready_samples);
        println!(
            "\nsteady loop: {agents} agents, claim → GetSandbox → ReleaseSandbox for {:.0} s:",
            self.elapsed.as_secs_f64()
        );
        println!(
            "  {} cycles ({:.1}/s); {} of {} creates answered from the pool; ready members \
             {min}..{max} during the loop",
            self.cycles,
            self.cycles_per_second(),
            self.tally.from_pool.len(),
            self.tally.creates()
        );
        println!(
            "  claim p50 {:.2} ms, p99 {:.2} ms; release p50 {:.2} ms, p99 {:.2} ms; released \
             to the pool {}, destroyed {}; errors {}",
            percentile_ms(&all, 0.50),
            percentile_ms(&all, 0.99),
            percentile_ms(&self.release, 0.50),
            percentile_ms(&self.release, 0.99),
            self.returned.pooled,
            self.returned.destroyed,
            errors_text(&self.tally, &self.returned)
        );
        println!(
            "  GetPoolStatus over the loop: {} hits, {} misses: reuse rate {:.1}%",
            self.hits(),
            self.misses(),
            self.reuse_rate() * 100.0
        );
    }

    pub(super) fn json(&self, agents: u32) -> Value {
        let (min, max) = min_max(&self.ready_samples);
        json!({
            "agents": agents,
            "seconds": self.elapsed.as_secs_f64(),
            "cycles": self.cycles,
            "cycles_per_second": self.cycles_per_second(),
            "creates": self.tally.creates(),
            "from_pool": self.tally.from_pool.len(),
            "claim_ms": latency_json(&self.tally.all()),
            "release_ms": latency_json(&self.release),
            "released_to_pool": self.returned.pooled,
            "destroyed": self.returned.destroyed,
            "pool_hits": self.hits(),
            "pool_misses": self.misses(),
            "reuse_rate": self.reuse_rate(),
            "ready_min": min,
            "ready_max": max,
            "errors": self.tally.errors,
            "first_errors": self.tally.first_error,
            "given_back": returned_json(&self.returned),
        })
    }
}

/// The first error of each gRPC code in every part of the report, on stderr.
pub(super) fn print_first_errors(report: &Value) {
    pub(super) fn walk(path: &str, value: &Value) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    if key == "first_errors" {
                        for (code, message) in value.as_object().into_iter().flatten() {
                            eprintln!(
                                "{path}: first {code} error: {}",
                                message.as_str().unwrap_or("")
                            );
                        }
                    } else {
                        walk(&format!("{path}/{key}"), value);
                    }
                }
            }
            Value::Array(list) => {
                for (index, value) in list.iter().enumerate() {
                    walk(&format!("{path}[{index}]"), value);
                }
            }
            _ => {}
        }
    }
    walk("", report);
}

pub(super) fn min_max(samples: &[i32]) -> (i32, i32) {
    let min = samples.iter().copied().min().unwrap_or(0);
    let max = samples.iter().copied().max().unwrap_or(0);
    (min, max)
}

pub(super) fn latency_json(sorted: &[Duration]) -> Value {
    let mean = if sorted.is_empty() {
        0.0
    } else {
        millis(sorted.iter().sum::<Duration>()) / sorted.len() as f64
    };
    json!({
        "count": sorted.len(),
        "mean": mean,
        "p50": percentile_ms(sorted, 0.50),
        "p99": percentile_ms(sorted, 0.99),
        "p999": percentile_ms(sorted, 0.999),
        "max": sorted.last().copied().map(millis).unwrap_or(0.0),
    })
}

pub(super) fn returned_json(returned: &Returned) -> Value {
    json!({
        "released_to_pool": returned.pooled,
        "destroyed": returned.destroyed,
        "seconds": returned.elapsed.as_secs_f64(),
        "errors": returned.failed.errors,
        "first_errors": returned.failed.first_error,
    })
}

/// Failed creates and failed give-backs, by gRPC code.
pub(super) fn errors_text(creates: &Tally, returned: &Returned) -> String {
    let mut parts: Vec<String> =
        creates.errors.iter().map(|(code, count)| format!("{code}:{count}")).collect();
    parts.extend(
        returned.failed.errors.iter().map(|(code, count)| format!("give-back {code}:{count}")),
    );
    if parts.is_empty() { "0".into() } else { parts.join(",") }
}
