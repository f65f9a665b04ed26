//! `sandboxctl bench listing`: ListSandboxes' first page beside a page far down the listing
//! (page 1,000 by default), for the cost-growth benchmark (`scripts/bench-cost-listing`).
//!
//! Decisions:
//! - The deep page is reached the way a client reaches it: by following `depth - 1`
//!   `next_page_token`s from the first page (the walk is timed once, but not compared). Its token
//!   is then replayed; a keyset token names a fixed position, so every replay does the same work.
//! - Only the two compared requests are timed, one at a time (a latency, not a throughput), and
//!   they alternate (first, deep, first, …) so both see the same noise of a shared machine.
//! - Medians and p99 over `repeats` requests each, after `warmup` unmeasured ones; the server's
//!   prepared statements switch to PostgreSQL's generic plan after five executions on a
//!   connection, so the timed requests see the plan the server uses in steady state.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::{
    Client, Connection,
    stats::{millis, percentile_ms},
};
use crate::proto::ListSandboxesRequest;

#[derive(Args)]
pub struct ListingArgs {
    /// Sandboxes per page.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    page_size: u32,
    /// Number of the deep page (the first page is 1): reached by following depth − 1 tokens.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(2..))]
    depth: u32,
    /// Timed requests of each page.
    #[arg(long, default_value_t = 500)]
    repeats: usize,
    /// Unmeasured requests of each page before the timed ones.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// The deep page must be within this factor of the first (median and p99); printed as the goal.
    #[arg(long, default_value_t = 2.0)]
    goal_ratio: f64,
}

/// Sorted latencies of one page's timed requests.
struct Timings(Vec<Duration>);

impl Timings {
    fn p(&self, fraction: f64) -> f64 {
        percentile_ms(&self.0, fraction)
    }

    fn json(&self) -> serde_json::Value {
        let mean = millis(self.0.iter().sum::<Duration>()) / self.0.len().max(1) as f64;
        json!({
            "p50": self.p(0.50),
            "p90": self.p(0.90),
            "p99": self.p(0.99),
            "mean": mean,
            "max": self.p(1.0),
        })
    }
}

pub async fn run(connection: &Connection, args: ListingArgs, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(args.repeats > 0, "--repeats must be positive");
    let mut client = connection.control();
    let first = request(&args, String::new());
    let walk_started = Instant::now();
    let deep = walk_to_deep_page(&mut client, &args).await?;
    let walk = walk_started.elapsed();
    let expected_first = page_ids(&mut client, &first).await?;
    let expected_deep = page_ids(&mut client, &deep).await?;
    anyhow::ensure!(!expected_deep.is_empty(), "page {} is empty", args.depth);

    for _ in 0..args.warmup {
        page_ids(&mut client, &first).await?;
        page_ids(&mut client, &deep).await?;
    }
    let mut first_times = Vec::with_capacity(args.repeats);
    let mut deep_times = Vec::with_capacity(args.repeats);
    for _ in 0..args.repeats {
        for (page, expected, times) in
            [(&first, &expected_first, &mut first_times), (&deep, &expected_deep, &mut deep_times)]
        {
            let started = Instant::now();
            let ids = page_ids(&mut client, page).await?;
            times.push(started.elapsed());
            // The listing must not change under the benchmark (nothing else creates here).
            anyhow::ensure!(&ids == expected, "a page changed while it was being timed");
        }
    }
    first_times.sort_unstable();
    deep_times.sort_unstable();
    let (first_times, deep_times) = (Timings(first_times), Timings(deep_times));
    let ratio_p50 = deep_times.p(0.50) / first_times.p(0.50);
    let ratio_p99 = deep_times.p(0.99) / first_times.p(0.99);
    let met = ratio_p50 <= args.goal_ratio && ratio_p99 <= args.goal_ratio;
    let before_deep = u64::from(args.depth - 1) * u64::from(args.page_size);
    if json {
        let report = json!({
            "benchmark": "listing",
            "page_size": args.page_size,
            "depth": args.depth,
            "sandboxes_before_deep_page": before_deep,
            "deep_page_rows": expected_deep.len(),
            "repeats": args.repeats,
            "walk_seconds": walk.as_secs_f64(),
            "first_ms": first_times.json(),
            "deep_ms": deep_times.json(),
            "ratio_p50": ratio_p50,
            "ratio_p99": ratio_p99,
            "goal_ratio": args.goal_ratio,
            "goal_met": met,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "page size {}; page {} follows {} tokens ({before_deep} sandboxes before it, {} on it); \
         walk {:.2} s ({:.2} ms per page); {} timed requests of each page, alternating, after {} warmup",
        args.page_size,
        args.depth,
        args.depth - 1,
        expected_deep.len(),
        walk.as_secs_f64(),
        millis(walk) / f64::from(args.depth - 1),
        args.repeats,
        args.warmup
    );
    println!("{:>12} {:>8} {:>8} {:>8} {:>8}", "page", "p50 ms", "p90 ms", "p99 ms", "max ms");
    for (label, times) in
        [("first".to_string(), &first_times), (args.depth.to_string(), &deep_times)]
    {
        println!(
            "{label:>12} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            times.p(0.50),
            times.p(0.90),
            times.p(0.99),
            times.p(1.0)
        );
    }
    println!(
        "deep/first: p50 {ratio_p50:.2}x, p99 {ratio_p99:.2}x (goal: within {}x: {})",
        args.goal_ratio,
        if met { "met" } else { "MISSED" }
    );
    Ok(())
}

fn request(args: &ListingArgs, page_token: String) -> ListSandboxesRequest {
    ListSandboxesRequest { page_size: args.page_size as i32, page_token, ..Default::default() }
}

/// The request of page `depth`: its token comes from page `depth - 1`.
async fn walk_to_deep_page(
    client: &mut Client,
    args: &ListingArgs,
) -> anyhow::Result<ListSandboxesRequest> {
    let mut page = request(args, String::new());
    for number in 1..args.depth {
        let token = client.list_sandboxes(page).await?.into_inner().next_page_token;
        anyhow::ensure!(
            !token.is_empty(),
            "the listing ends at page {number}; page {} needs more than {} sandboxes",
            args.depth,
            u64::from(number) * u64::from(args.page_size)
        );
        page = request(args, token);
    }
    Ok(page)
}

async fn page_ids(client: &mut Client, page: &ListSandboxesRequest) -> anyhow::Result<Vec<String>> {
    let response = client.list_sandboxes(page.clone()).await?.into_inner();
    Ok(response.sandboxes.into_iter().map(|sandbox| sandbox.sandbox_id).collect())
}
