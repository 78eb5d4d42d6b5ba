//! Benchmark runs for `weir bench`: latency recorded without coordinated
//! omission, summarized whole-run, after warm-up and around checkpoints, and
//! plotted over time as SVG.
//!
//! Latency of a record = the sink's clock when it arrives − the time the paced
//! source was *scheduled* to emit it ([`weir::connectors::pace`]). A stall
//! therefore shows in the tail of every record that should have been emitted
//! during it, instead of hiding behind a source that simply emitted later.
//! Each sink subtask keeps HDR histograms per 100 ms of scheduled time and
//! merges them into a shared [`LatencyLog`] when the input ends.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir::connectors::{ConnectorContext, Sink};
use weir::{Result, WeirError};
use weir_operators::CheckpointId;

/// Width of one latency bucket (of scheduled emit time).
pub const BUCKET: Duration = Duration::from_millis(100);

fn histogram() -> Result<Histogram<u64>> {
    // 1 µs .. 100 s, 3 significant digits.
    Histogram::new_with_bounds(1_000, 100_000_000_000, 3).map_err(|e| WeirError::Connector {
        connector: "latency sink".into(),
        message: e.to_string(),
    })
}

/// Latencies of a run, per bucket of scheduled emit time since `origin_ns`.
#[derive(Debug)]
pub struct LatencyLog {
    origin_ns: u64,
    buckets: Mutex<Vec<Option<Histogram<u64>>>>,
}

impl LatencyLog {
    /// A log whose time 0 is `origin_ns` ([`weir::clock::now_ns`] at the start).
    pub fn new(origin_ns: u64) -> Arc<Self> {
        Arc::new(LatencyLog {
            origin_ns,
            buckets: Mutex::new(Vec::new()),
        })
    }

    fn merge(&self, local: &mut [Option<Histogram<u64>>]) {
        let Ok(mut buckets) = self.buckets.lock() else { return };
        if buckets.len() < local.len() {
            buckets.resize(local.len(), None);
        }
        for (b, l) in buckets.iter_mut().zip(local.iter_mut()) {
            if let Some(l) = l.take() {
                match b {
                    Some(b) => {
                        let _ = b.add(&l);
                    }
                    None => *b = Some(l),
                }
            }
        }
    }

    /// Summarizes the log. `warmup`: buckets before it are left out of
    /// `after_warmup`; `checkpoints`: (trigger, duration) since the start.
    pub fn report(&self, warmup: Duration, checkpoints: &[(Duration, Duration)]) -> LatencyReport {
        let buckets = self.buckets.lock().map(|b| b.clone()).unwrap_or_default();
        let mut whole = histogram().ok();
        let mut after = histogram().ok();
        let mut around = histogram().ok();
        let mut seconds: Vec<Option<Histogram<u64>>> = Vec::new();
        let per_second = (Duration::from_secs(1).as_nanos() / BUCKET.as_nanos()) as usize;
        for (i, b) in buckets.iter().enumerate() {
            let Some(b) = b else { continue };
            let start = BUCKET * i as u32;
            let end = start + BUCKET;
            let add = |h: &mut Option<Histogram<u64>>| {
                if let Some(h) = h {
                    let _ = h.add(b);
                }
            };
            add(&mut whole);
            if start >= warmup {
                add(&mut after);
            }
            // A bucket "around a checkpoint" overlaps [trigger, complete].
            if checkpoints.iter().any(|(t, d)| start <= *t + *d && *t < end) {
                add(&mut around);
            }
            let s = i / per_second;
            if seconds.len() <= s {
                seconds.resize(s + 1, None);
            }
            match &mut seconds[s] {
                Some(h) => {
                    let _ = h.add(b);
                }
                slot => *slot = Some(b.clone()),
            }
        }
        LatencyReport {
            whole: whole.as_ref().and_then(Percentiles::of),
            after_warmup: after.as_ref().and_then(Percentiles::of),
            around_checkpoints: around.as_ref().and_then(Percentiles::of),
            warmup_s: warmup.as_secs_f64(),
            per_second: seconds
                .iter()
                .enumerate()
                .filter_map(|(s, h)| {
                    let p = Percentiles::of(h.as_ref()?)?;
                    Some(SecondLatency {
                        second: s as u64,
                        p50_ms: p.p50_ms,
                        p99_ms: p.p99_ms,
                        max_ms: p.max_ms,
                    })
                })
                .collect(),
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    /// Records measured.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// 99.99th percentile.
    pub p9999_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Option<Percentiles> {
        if h.is_empty() {
            return None;
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        Some(Percentiles {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            p9999_ms: ms(h.value_at_quantile(0.9999)),
            max_ms: ms(h.max()),
        })
    }
}

/// p50 / p99 / max of the records scheduled in one second of the run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SecondLatency {
    /// Seconds since the start.
    pub second: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
}

/// The latency of a run.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    /// Every record.
    pub whole: Option<Percentiles>,
    /// Records scheduled after the warm-up.
    pub after_warmup: Option<Percentiles>,
    /// Records scheduled in a 100 ms bucket that overlaps a checkpoint.
    pub around_checkpoints: Option<Percentiles>,
    /// The warm-up left out of `after_warmup`, in seconds.
    pub warmup_s: f64,
    /// Per second of the run.
    pub per_second: Vec<SecondLatency>,
}

/// A sink of `(key, value, emit_ns)` records (W1/W2 output) that records
/// `now - emit_ns` per record into 100 ms buckets of `emit_ns`.
pub struct LatencySink {
    log: Arc<LatencyLog>,
    local: Vec<Option<Histogram<u64>>>,
}

impl LatencySink {
    /// A factory whose subtasks merge into `log` when their input ends.
    pub fn factory(log: Arc<LatencyLog>) -> impl Fn(ConnectorContext) -> Result<LatencySink> + Send + 'static {
        move |_| {
            Ok(LatencySink {
                log: log.clone(),
                local: Vec::new(),
            })
        }
    }
}

impl Sink<(u64, u64, u64)> for LatencySink {
    fn is_stateful() -> bool {
        false
    }

    #[inline]
    fn write(&mut self, records: &mut Vec<(u64, u64, u64)>) -> Result<()> {
        // One clock read per batch: the batch arrived now.
        let now = weir::clock::now_ns();
        let bucket_ns = BUCKET.as_nanos() as u64;
        for (_, _, emit_ns) in records.drain(..) {
            let bucket = (emit_ns.saturating_sub(self.log.origin_ns) / bucket_ns) as usize;
            if self.local.len() <= bucket {
                self.local.resize(bucket + 1, None);
            }
            let h = match &mut self.local[bucket] {
                Some(h) => h,
                slot => slot.insert(histogram()?),
            };
            h.saturating_record(now.saturating_sub(emit_ns).max(1_000));
        }
        Ok(())
    }

    fn snapshot(&mut self, _id: CheckpointId) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }

    fn commit(&mut self, _id: CheckpointId) -> Result<()> {
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.log.merge(&mut self.local);
        Ok(())
    }
}

impl Drop for LatencySink {
    fn drop(&mut self) {
        // A cancelled run still reports what it measured.
        self.log.merge(&mut self.local);
    }
}

/// An SVG plot of latency over time: p50, p99 and max per second on a
/// logarithmic axis, checkpoints shaded (trigger to complete).
pub fn latency_svg(title: &str, report: &LatencyReport, checkpoints: &[(Duration, Duration)]) -> String {
    use std::fmt::Write;
    let (w, h, left, right, top, bottom) = (960.0, 420.0, 70.0, 20.0, 40.0, 50.0);
    let seconds = report.per_second.last().map_or(1, |s| s.second + 1).max(1) as f64;
    let values = report.per_second.iter().flat_map(|s| [s.p50_ms, s.max_ms]);
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo_exp, hi_exp) = if lo > hi {
        (-2, 2)
    } else {
        (
            lo.max(1e-3).log10().floor() as i32,
            hi.max(1e-3).log10().ceil().max(lo.log10().floor() + 1.0) as i32,
        )
    };
    let x = |s: f64| left + (w - left - right) * s / seconds;
    let y = |ms: f64| {
        let v = ms.max(10f64.powi(lo_exp)).log10();
        top + (h - top - bottom) * (1.0 - (v - lo_exp as f64) / (hi_exp - lo_exp) as f64)
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="{w}" height="{h}" fill="white"/>
<text x="{left}" y="24" font-size="15">{}</text>
"##,
        escape(title)
    );
    for (t, d) in checkpoints {
        let (x0, x1) = (x(t.as_secs_f64()), x((*t + *d).as_secs_f64()));
        let _ = writeln!(
            svg,
            r##"<rect x="{x0:.1}" y="{top}" width="{:.1}" height="{:.1}" fill="#f2c14e" fill-opacity="0.35"/>"##,
            (x1 - x0).max(1.0),
            h - top - bottom
        );
    }
    for e in lo_exp..=hi_exp {
        let ms = 10f64.powi(e);
        let yy = y(ms);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{} ms</text>"##,
            w - right,
            left - 6.0,
            yy + 4.0,
            trim(ms)
        );
    }
    let step = ((seconds / 10.0).ceil() as u64).max(1);
    for s in (0..=seconds as u64).step_by(step as usize) {
        let xx = x(s as f64);
        let _ = writeln!(
            svg,
            r##"<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{s} s</text>"##,
            h - bottom + 18.0
        );
    }
    for (name, color, get) in [
        (
            "max",
            "#c0392b",
            (|s: &SecondLatency| s.max_ms) as fn(&SecondLatency) -> f64,
        ),
        ("p99", "#e67e22", |s: &SecondLatency| s.p99_ms),
        ("p50", "#2471a3", |s: &SecondLatency| s.p50_ms),
    ] {
        let points: Vec<String> = report
            .per_second
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.second as f64 + 0.5), y(get(s))))
            .collect();
        let _ = writeln!(
            svg,
            r##"<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{}"><title>{name}</title></polyline>"##,
            points.join(" ")
        );
    }
    let legend_y = h - 12.0;
    let _ = writeln!(
        svg,
        r##"<text x="{left}" y="{legend_y}"><tspan fill="#2471a3">— p50</tspan>   <tspan fill="#e67e22">— p99</tspan>   <tspan fill="#c0392b">— max</tspan> per second of scheduled emit time   <tspan fill="#b7950b">▮ checkpoint (trigger → complete)</tspan></text>"##
    );
    svg.push_str("</svg>\n");
    svg
}

fn trim(ms: f64) -> String {
    if ms >= 1.0 {
        format!("{ms:.0}")
    } else {
        format!("{ms}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_bucketed_by_scheduled_time_and_split_around_checkpoints() {
        let log = LatencyLog::new(0);
        let mut sink = LatencySink::factory(log.clone())(ConnectorContext::standalone("s", 0, 1)).unwrap();
        // Scheduled at 0.05 s and 1.55 s of the process clock; both arrive now,
        // so the earlier one waited at least as long.
        let mut batch = vec![(1, 1, 50_000_000), (2, 2, 1_550_000_000)];
        std::thread::sleep(Duration::from_millis(2));
        sink.write(&mut batch).unwrap();
        sink.finish().unwrap();
        let checkpoints = [(Duration::from_millis(1500), Duration::from_millis(30))];
        let r = log.report(Duration::from_secs(1), &checkpoints);
        assert_eq!(r.whole.unwrap().count, 2);
        assert_eq!(r.after_warmup.unwrap().count, 1, "one record after 1 s of warm-up");
        assert_eq!(
            r.around_checkpoints.unwrap().count,
            1,
            "the 1.5-1.6 s bucket overlaps the checkpoint"
        );
        assert_eq!(r.per_second.len(), 2);
        assert!(r.per_second[0].max_ms >= r.per_second[1].max_ms);
        let svg = latency_svg("W2 <test>", &r, &checkpoints);
        assert!(svg.starts_with("<svg") && svg.contains("W2 &lt;test&gt;") && svg.contains("polyline"));
    }
}
