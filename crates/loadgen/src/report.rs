//! What a run measured: per-worker tallies merged into one JSON report.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// The measured part of a run: operations completing in `[start, end)` count; workers stop at
/// `end`. Everything before `start` is warm-up.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// When measurement starts.
    pub start: Instant,
    /// When measurement (and the load) ends.
    pub end: Instant,
}

impl Window {
    /// A window after `warmup`, lasting `duration`, from now.
    pub fn after(warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now() + warmup;
        Self {
            start,
            end: start + duration,
        }
    }

    /// Whether the load should stop.
    pub fn over(&self) -> bool {
        Instant::now() >= self.end
    }
}

/// One worker's tally (merged with the others' at the end).
pub struct Tally {
    window: Window,
    latency_us: Histogram<u64>,
    /// Operations completed in the window.
    pub ops: u64,
    /// Failed operations (any time during the run).
    pub errors: u64,
    /// Bytes of payload moved in the window (fetched message bytes, message bytes sent).
    pub bytes: u64,
    /// The first error's text.
    pub first_error: Option<String>,
}

impl Tally {
    /// An empty tally for `window`.
    pub fn new(window: Window) -> Self {
        Self {
            window,
            latency_us: latency_histogram(),
            ops: 0,
            errors: 0,
            bytes: 0,
            first_error: None,
        }
    }

    /// The window this tally counts in.
    pub fn window(&self) -> Window {
        self.window
    }

    /// An operation that began at `began` and has just completed, having moved `bytes`.
    pub fn record(&mut self, began: Instant, bytes: u64) {
        let now = Instant::now();
        if now < self.window.start || now >= self.window.end {
            return;
        }
        self.ops += 1;
        self.bytes += bytes;
        let us = now.duration_since(began).as_micros();
        self.latency_us
            .saturating_record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
    }

    /// A failed operation.
    pub fn error(&mut self, error: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error.to_string());
        }
    }

    /// Adds another worker's tally to this one.
    pub fn merge(&mut self, other: Tally) {
        self.ops += other.ops;
        self.errors += other.errors;
        self.bytes += other.bytes;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
    }

    /// The report of a timed scenario.
    pub fn report(&self, base: ReportBase, duration: Duration) -> Report {
        let seconds = duration.as_secs_f64().max(1e-9);
        let h = &self.latency_us;
        let latency = (!h.is_empty()).then(|| Latency {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
        });
        Report {
            base,
            duration_s: round3(seconds),
            ops: self.ops,
            ops_per_s: round3(self.ops as f64 / seconds),
            errors: self.errors,
            bytes: self.bytes,
            mb_per_s: round3(self.bytes as f64 / seconds / 1e6),
            latency_us: latency,
            first_error: self.first_error.clone(),
            opened: None,
            open_s: None,
        }
    }
}

/// 1 µs to 10 min, 3 significant digits.
#[allow(clippy::expect_used)] // constant bounds, valid by construction
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// What every report says about the run itself.
#[derive(Clone, Debug, Serialize)]
pub struct ReportBase {
    /// The scenario's name.
    pub scenario: &'static str,
    /// The target, `host:port`.
    pub target: String,
    /// Whether the client side was TLS.
    pub tls: bool,
    /// Workers at once.
    pub concurrency: usize,
    /// Sessions held (idle, latency).
    pub sessions: Option<usize>,
}

/// Latency percentiles in microseconds (per operation: a login cycle, a NOOP, a fetch, a
/// message, a request).
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Slowest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

/// The JSON report (`--output` and stdout).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The run.
    #[serde(flatten)]
    pub base: ReportBase,
    /// Seconds measured.
    pub duration_s: f64,
    /// Operations completed in the window.
    pub ops: u64,
    /// `ops` per second.
    pub ops_per_s: f64,
    /// Failed operations.
    pub errors: u64,
    /// Payload bytes moved in the window.
    pub bytes: u64,
    /// `bytes` per second, in MB (10^6).
    pub mb_per_s: f64,
    /// Latency percentiles, if anything completed.
    pub latency_us: Option<Latency>,
    /// The first error, if any.
    pub first_error: Option<String>,
    /// Idle: sessions opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opened: Option<u64>,
    /// Idle: seconds it took to open them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_s: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_window_counts() {
        let warming = Window::after(Duration::from_secs(60), Duration::from_secs(60));
        let mut tally = Tally::new(warming);
        tally.record(Instant::now(), 10);
        assert_eq!(tally.ops, 0, "warm-up");
        let now = Instant::now();
        let window = Window {
            start: now - Duration::from_secs(1),
            end: now + Duration::from_secs(60),
        };
        let mut tally = Tally::new(window);
        tally.record(Instant::now() - Duration::from_micros(250), 10);
        tally.error("boom");
        tally.error("second");
        let mut total = Tally::new(window);
        total.merge(tally);
        let report = total.report(
            ReportBase {
                scenario: "latency",
                target: "127.0.0.1:1".into(),
                tls: false,
                concurrency: 1,
                sessions: None,
            },
            Duration::from_secs(2),
        );
        assert_eq!(report.ops, 1);
        assert_eq!(report.bytes, 10);
        assert_eq!(report.errors, 2);
        assert_eq!(report.first_error.as_deref(), Some("boom"));
        assert_eq!(report.ops_per_s, 0.5);
        let p50 = report.latency_us.as_ref().unwrap().p50;
        assert!((250..1000).contains(&p50), "{p50}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["scenario"], "latency");
        assert!(json.get("opened").is_none());
    }
}
