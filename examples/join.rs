//! A keyed two-stream join: orders ⋈ customers on the customer id, with both
//! sides kept in RocksDB keyed state (Flink's `connect(..).keyBy(..)` with a
//! `KeyedCoProcessFunction`, or Flink SQL's regular join).
//!
//! ```text
//! customers.jsonl ─┐
//!                  ├─ connect -> Either<Customer, Order> -> key_by(customer id) -> InnerJoin -> printed
//! orders.jsonl ────┘
//! ```
//!
//! ```sh
//! cargo run --example join
//! cargo run --example join -- --customers c.jsonl --orders o.jsonl
//! ```
//!
//! The two sources run concurrently, so an order may reach the join before
//! its customer does: `InnerJoin` emits every matching (customer, order) pair
//! exactly once, whichever side arrives first. An order whose customer never
//! arrives is never emitted (inner join). Both sides stay in state forever;
//! for unbounded inputs bound the state with time, using `IntervalJoin`
//! (`right.ts` within `[left.ts + lower, left.ts + upper]`, state dropped by
//! the watermark) or `WindowJoin` (both sides in one event-time window).

use clap::Parser;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use weir::connectors::collect::CollectSink;
use weir::connectors::line_source::LineSource;
use weir::operators::{Either, InnerJoin};
use weir::{JobBuilder, JobConfig};

#[derive(Parser)]
struct Args {
    /// Customers as JSON lines: {"id":1,"name":"Ada","city":"London"}; default: a built-in sample.
    #[arg(long)]
    customers: Option<PathBuf>,
    /// Orders as JSON lines: {"id":1001,"customer":1,"item":"notebook","cents":450}; default: a built-in sample.
    #[arg(long)]
    orders: Option<PathBuf>,
}

// Both sides are buffered in keyed state, so they are serde.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Customer {
    id: u64,
    name: String,
    city: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u64,
    customer: u64,
    item: String,
    cents: u64,
}

const CUSTOMERS: &str = r#"
{"id":1,"name":"Ada","city":"London"}
{"id":2,"name":"Grace","city":"New York"}
{"id":3,"name":"Edsger","city":"Amsterdam"}
"#;

// Customer 4 does not exist: order 1005 has no match.
const ORDERS: &str = r#"
{"id":1001,"customer":1,"item":"notebook","cents":450}
{"id":1002,"customer":2,"item":"compiler","cents":9900}
{"id":1003,"customer":1,"item":"pencils","cents":120}
{"id":1004,"customer":3,"item":"semaphore","cents":2500}
{"id":1005,"customer":4,"item":"mystery box","cents":999}
"#;

/// One joined row.
#[derive(Debug)]
struct Enriched {
    order: u64,
    name: String,
    city: String,
    item: String,
    cents: u64,
}

fn parse<T: DeserializeOwned>(line: &[u8]) -> Result<T, String> {
    serde_json::from_slice(line).map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    init_logging();
    let args = Args::parse();
    let scratch = tempfile::tempdir()?; // checkpoints (and the sample files) go here
    let sample = |name: &str, text: &str| -> std::io::Result<PathBuf> {
        let path = scratch.path().join(name);
        std::fs::write(&path, text.trim_start())?;
        Ok(path)
    };
    let customers_file = match args.customers {
        Some(path) => path,
        None => sample("customers.jsonl", CUSTOMERS)?,
    };
    let orders_file = match args.orders {
        Some(path) => path,
        None => sample("orders.jsonl", ORDERS)?,
    };

    let joined = Arc::new(Mutex::new(Vec::new()));
    let job = JobBuilder::new("join");
    let customers = job
        .source(
            "customers",
            LineSource::new(customers_file, parse::<Customer>).factory(),
        )
        .uid("customers");
    let orders = job
        .source("orders", LineSource::new(orders_file, parse::<Order>).factory())
        .uid("orders");
    customers
        .connect(orders) // customers become Either::Left, orders Either::Right
        // Both sides of one customer id meet in the same subtask and state.
        .key_by(|e: &Either<Customer, Order>| match e {
            Either::Left(c) => c.id,
            Either::Right(o) => o.customer,
        })
        .parallelism(2)
        .process(
            "join",
            InnerJoin {
                join: |_id: &u64, c: &Customer, o: &Order| Enriched {
                    order: o.id,
                    name: c.name.clone(),
                    city: c.city.clone(),
                    item: o.item.clone(),
                    cents: o.cents,
                },
            },
        )
        .uid("join")
        .sink("collect", CollectSink::factory(joined.clone()));
    job.build()?
        .run(JobConfig::with_checkpoint_dir(scratch.path().join("checkpoints")))?;

    let mut rows: Vec<_> = joined
        .lock()
        .map_err(|_| anyhow::anyhow!("a sink panicked"))?
        .drain(..)
        .collect();
    rows.sort_by_key(|r| r.order);
    for r in &rows {
        println!(
            "order {}  {} ({})  {}  {}.{:02}",
            r.order,
            r.name,
            r.city,
            r.item,
            r.cents / 100,
            r.cents % 100
        );
    }
    println!("{} joined rows", rows.len());
    Ok(())
}

/// Logs to stderr; `WEIR_LOG=info` shows checkpoints and more.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
