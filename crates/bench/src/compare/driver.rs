//! Closed-loop measurement: N clients, each its own connection, each sending its next
//! request when the previous one answered; a warm-up, then several measured windows.

use super::dataset::Dataset;
use super::workload::{Distribution, Params, Picker, Target, Variant};
use crate::cpu::Meter;
use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Latencies are recorded in microseconds up to this bound.
const MAX_LATENCY_MICROS: u64 = 60_000_000;

/// The timing of one measurement.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Timing {
    #[serde(with = "secs")]
    pub warmup: Duration,
    /// Length of each measured window.
    #[serde(with = "secs")]
    pub duration: Duration,
    /// Measured windows; the report gives their median and spread.
    pub repetitions: usize,
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// One measured window.
#[derive(Clone, Debug, Serialize)]
pub struct Window {
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub errors: u64,
    /// The server's CPU time per operation in the window, microseconds (`None` when the
    /// system's processes could not be read: a peer on another machine).
    pub server_cpu_us_per_op: Option<f64>,
}

/// The windows of one (variant, distribution, clients) measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    pub windows: Vec<Window>,
    /// The first error a request returned, if any did.
    pub first_error: Option<String>,
}

/// The median of `v` (0 when empty).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if !n.is_multiple_of(2) => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Measurement {
    fn each(&self, f: impl Fn(&Window) -> f64) -> Vec<f64> {
        self.windows.iter().map(f).collect()
    }
    pub fn ops(&self) -> f64 {
        median(self.each(|w| w.ops_per_sec))
    }
    /// Smallest and largest window throughput.
    pub fn ops_spread(&self) -> (f64, f64) {
        let v = self.each(|w| w.ops_per_sec);
        (
            v.iter().copied().fold(f64::INFINITY, f64::min),
            v.iter().copied().fold(0.0, f64::max),
        )
    }
    pub fn p50(&self) -> f64 {
        median(self.each(|w| w.p50_ms))
    }
    pub fn p90(&self) -> f64 {
        median(self.each(|w| w.p90_ms))
    }
    pub fn p99(&self) -> f64 {
        median(self.each(|w| w.p99_ms))
    }
    pub fn p999(&self) -> f64 {
        median(self.each(|w| w.p999_ms))
    }
    /// Median server CPU microseconds per operation over the windows that could read it.
    pub fn cpu_per_op(&self) -> Option<f64> {
        let v: Vec<f64> = self
            .windows
            .iter()
            .filter_map(|w| w.server_cpu_us_per_op)
            .collect();
        (!v.is_empty()).then(|| median(v))
    }
    pub fn errors(&self) -> u64 {
        self.windows.iter().map(|w| w.errors).sum()
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3).expect("valid bounds")
}

/// Runs `variant` with `clients` concurrent clients, reading `meter` at every window's edges.
pub async fn measure(
    target: &dyn Target,
    meter: &Meter,
    variant: &Variant,
    distribution: Distribution,
    clients: usize,
    data: &Dataset,
    timing: Timing,
) -> anyhow::Result<Measurement> {
    let mut ops = Vec::with_capacity(clients);
    for _ in 0..clients {
        ops.push(
            target
                .connect(variant, data)
                .await
                .with_context(|| format!("{} {}: connecting", variant.system, variant.name))?,
        );
    }
    let windows = timing.repetitions.max(1);
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + timing.warmup;
    let end = measure_from + timing.duration * windows as u32;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut op) in ops.into_iter().enumerate() {
        let (workload, data) = (variant.workload, *data);
        tasks.spawn(async move {
            let mut picker = Picker::new(distribution, 1 + i as u64);
            let mut hists: Vec<Histogram<u64>> = (0..windows).map(|_| histogram()).collect();
            let mut errors = vec![0u64; windows];
            let mut first_error = None;
            tokio::time::sleep_until(start.into()).await;
            loop {
                let params = Params::draw(workload, &mut picker, &data);
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let result = op(&params).await;
                let micros = t.elapsed().as_micros() as u64;
                if t >= measure_from {
                    let w = ((t - measure_from).as_nanos() / timing.duration.as_nanos().max(1))
                        as usize;
                    let w = w.min(windows - 1);
                    hists[w].saturating_record(micros.max(1));
                    if let Err(e) = &result {
                        errors[w] += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (hists, errors, first_error)
        });
    }
    let mut readings = Vec::with_capacity(windows + 1);
    for k in 0..=windows {
        tokio::time::sleep_until((measure_from + timing.duration * k as u32).into()).await;
        readings.push(meter.micros().await?);
    }
    let mut hists: Vec<Histogram<u64>> = (0..windows).map(|_| histogram()).collect();
    let mut errors = vec![0u64; windows];
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        let (h, e, f) = done.context("a client task failed")?;
        for w in 0..windows {
            hists[w].add(&h[w]).context("merging histograms")?;
            errors[w] += e[w];
        }
        first_error = first_error.or(f);
    }
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    Ok(Measurement {
        windows: hists
            .iter()
            .zip(errors)
            .zip(readings.windows(2))
            .map(|((h, errors), cpu)| Window {
                ops_per_sec: h.len() as f64 / timing.duration.as_secs_f64(),
                p50_ms: q(h, 0.5),
                p90_ms: q(h, 0.9),
                p99_ms: q(h, 0.99),
                p999_ms: q(h, 0.999),
                errors,
                server_cpu_us_per_op: match (cpu[0], cpu[1]) {
                    (Some(from), Some(to)) if !h.is_empty() => {
                        Some(to.saturating_sub(from) as f64 / h.len() as f64)
                    }
                    _ => None,
                },
            })
            .collect(),
        first_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread_of_windows() {
        let w = |ops| Window {
            ops_per_sec: ops,
            p50_ms: ops / 10.0,
            p90_ms: 0.0,
            p99_ms: 0.0,
            p999_ms: 0.0,
            errors: 1,
            server_cpu_us_per_op: (ops > 10.0).then_some(ops / 5.0),
        };
        let m = Measurement {
            windows: vec![w(30.0), w(10.0), w(20.0)],
            first_error: None,
        };
        assert_eq!(m.ops(), 20.0);
        assert_eq!(m.ops_spread(), (10.0, 30.0));
        assert_eq!(m.p50(), 2.0);
        assert_eq!(m.errors(), 3);
        assert_eq!(m.cpu_per_op(), Some(5.0));
        assert_eq!(median(vec![1.0, 4.0]), 2.5);
    }
}
