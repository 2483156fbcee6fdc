//! The comparison's results: a JSON document with every figure, markdown tables with the ratio
//! of notadb to the best peer in every row, and SVG plots.

use super::dataset::Dataset;
use super::driver::{Measurement, Timing};
use super::machine::Machine;
use super::svg::{line_chart, Series};
use super::workload::{Distribution, Variant, Workload};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Every workload at the main concurrency.
    Main,
    /// Seed question 1 and point get at other concurrencies.
    Sweep,
    /// The same after growing the data set.
    Grown,
}

#[derive(Debug, Serialize)]
pub struct SystemInfo {
    pub name: &'static str,
    pub description: String,
    /// Seconds each load took (the first load, then the growth).
    pub load_secs: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub struct Skipped {
    pub system: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub workload: Workload,
    pub variants: usize,
    /// Empty when every variant gave the same answers.
    pub disagreements: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub phase: Phase,
    pub variant: Variant,
    pub distribution: Distribution,
    pub clients: usize,
    pub data_rows: usize,
    pub result: Result<Measurement, String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub command: String,
    pub machine: Machine,
    pub timing: Timing,
    pub clients: usize,
    pub dataset: Dataset,
    pub grown: Option<Dataset>,
    pub systems: Vec<SystemInfo>,
    /// Where servers and load generator ran (`--server-cpus`, `--client-cpus`).
    pub placement: String,
    pub skipped: Vec<Skipped>,
    pub checks: Vec<Check>,
    pub rows: Vec<Row>,
}

/// Server CPU microseconds per operation, or `n/a` when the system's processes could not be
/// read.
fn fmt_cpu(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.1}"))
}

fn fmt_ops(v: f64) -> String {
    let v = v.round() as u64;
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Report {
    pub fn new(
        command: String,
        placement: String,
        timing: Timing,
        dataset: Dataset,
        clients: usize,
    ) -> Report {
        Report {
            placement,
            command,
            machine: Machine::read(),
            timing,
            clients,
            dataset,
            grown: None,
            systems: Vec::new(),
            skipped: Vec::new(),
            checks: Vec::new(),
            rows: Vec::new(),
        }
    }

    pub fn skip(&mut self, system: &str, reason: String) {
        self.skipped.push(Skipped {
            system: system.into(),
            reason,
        });
    }

    pub fn loaded(&mut self, system: &str, took: Duration) {
        if let Some(s) = self.systems.iter_mut().find(|s| s.name == system) {
            s.load_secs.push(took.as_secs_f64());
        }
    }

    pub fn checked(&mut self, workload: Workload, variants: usize, disagreements: Vec<String>) {
        self.checks.push(Check {
            workload,
            variants,
            disagreements,
        });
    }

    fn ok_rows(&self) -> impl Iterator<Item = (&Row, &Measurement)> {
        self.rows
            .iter()
            .filter_map(|r| r.result.as_ref().ok().map(|m| (r, m)))
    }

    /// Throughput of the fastest peer (not notadb) among rows like `row`.
    fn best_peer(&self, row: &Row) -> Option<f64> {
        self.ok_rows()
            .filter(|(r, _)| {
                r.variant.system != "notadb"
                    && r.variant.workload == row.variant.workload
                    && r.distribution == row.distribution
                    && r.clients == row.clients
                    && (r.phase == Phase::Grown) == (row.phase == Phase::Grown)
            })
            .map(|(_, m)| m.ops())
            .reduce(f64::max)
    }

    /// The best notadb row and the best row of `peer` for a workload at the main concurrency
    /// (uniform keys).
    fn pair(&self, workload: Workload, peer: &str) -> Option<(&Measurement, &Measurement)> {
        let best = |system: &str| {
            self.ok_rows()
                .filter(|(r, _)| {
                    r.phase == Phase::Main
                        && r.variant.system == system
                        && r.variant.workload == workload
                        && r.distribution == Distribution::Uniform
                })
                .map(|(_, m)| m)
                .max_by(|a, b| a.ops().total_cmp(&b.ops()))
        };
        Some((best("notadb")?, best(peer)?))
    }

    /// Seed question 1 and point get with uniform keys, outside the growth phase, by
    /// workload, then variant (`Variant::label`), then client count: the concurrency table
    /// and its plots.
    fn sweep(&self) -> BTreeMap<(Workload, String), BTreeMap<usize, &Measurement>> {
        let mut sweep: BTreeMap<(Workload, String), BTreeMap<usize, &Measurement>> =
            BTreeMap::new();
        for (r, m) in self.ok_rows().filter(|(r, _)| {
            r.phase != Phase::Grown
                && r.distribution == Distribution::Uniform
                && matches!(r.variant.workload, Workload::Q1 | Workload::Get)
        }) {
            sweep
                .entry((r.variant.workload, r.variant.label()))
                .or_default()
                .insert(r.clients, m);
        }
        sweep
    }

    fn results_table(&self, out: &mut String, rows: &[&Row]) {
        let _ = writeln!(out, "| system | variant | keys | clients | ops/s (median) | spread | server CPU µs/op | p50 ms | p99 ms | p999 ms | errors | ÷ best peer |");
        let _ = writeln!(
            out,
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for row in rows {
            match &row.result {
                Ok(m) => {
                    let (lo, hi) = m.ops_spread();
                    let ratio = self
                        .best_peer(row)
                        .map_or("—".into(), |b| format!("{:.2}", m.ops() / b));
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} | {}–{} | {} | {:.3} | {:.3} | {:.3} | {} | {} |",
                        row.variant.system,
                        row.variant.name,
                        row.distribution.id(),
                        row.clients,
                        fmt_ops(m.ops()),
                        fmt_ops(lo),
                        fmt_ops(hi),
                        fmt_cpu(m.cpu_per_op()),
                        m.p50(),
                        m.p99(),
                        m.p999(),
                        m.errors(),
                        ratio
                    );
                }
                Err(e) => {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | failed: {} | | | | | | | |",
                        row.variant.system,
                        row.variant.name,
                        row.distribution.id(),
                        row.clients,
                        e.replace('|', "/")
                    );
                }
            }
        }
    }

    fn aims(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "| aim | notadb ops/s | peer ops/s | ratio | notadb CPU µs/op | peer CPU µs/op | notadb p99 ms | peer p99 ms | met |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
        // The aims of the reads issue: throughput at the same clients, the servers pinned.
        #[rustfmt::skip]
        let aims: [(&str, Workload, &str, f64); 6] = [
            ("seed question 1 ≥ 2x PostgreSQL", Workload::Q1, "postgres", 2.0),
            ("seed question 1 ≥ 1.2x Redis (sorted set)", Workload::Q1, "redis", 1.2),
            ("seed question 2 ≥ 2x PostgreSQL", Workload::Q2, "postgres", 2.0),
            ("point get ≥ 0.8x Redis `GET`", Workload::Get, "redis", 0.8),
            ("point get ≥ 1.5x PostgreSQL", Workload::Get, "postgres", 1.5),
            ("batched point get ≥ 1x Redis `MGET`", Workload::MultiGet, "redis", 1.0),
        ];
        for (aim, workload, peer, factor) in aims {
            match self.pair(workload, peer) {
                Some((n, p)) => {
                    let ratio = n.ops() / p.ops();
                    let met = ratio >= factor;
                    let _ = writeln!(
                        out,
                        "| {aim} | {} | {} | {ratio:.2} | {} | {} | {:.3} | {:.3} | {} |",
                        fmt_ops(n.ops()),
                        fmt_ops(p.ops()),
                        fmt_cpu(n.cpu_per_op()),
                        fmt_cpu(p.cpu_per_op()),
                        n.p99(),
                        p.p99(),
                        if met { "yes" } else { "**no**" }
                    );
                }
                None => {
                    let _ = writeln!(out, "| {aim} | | | | | | | | not measured |");
                }
            }
        }
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let o = &mut out;
        let _ = writeln!(o, "## Side by side: notadb, PostgreSQL, Redis, NATS KV\n");
        let _ = writeln!(o, "```sh\n{}\n```\n", self.command);
        let m = &self.machine;
        let _ = writeln!(o, "Machine: {} cores ({}), {} GiB, Linux {}; {}. Every client is its own connection in a closed loop. Server CPU µs/op: the user + system time the system's server processes used in a window over the operations in it (notadb: the node's own report; peers: their processes on this machine, found by name; `n/a` when there are none). After loading, every system read its whole data set once (the caches of a service that has been running). Before each measurement, a warm-up {:.1} s, then {} windows of {:.1} s: ops/s is the median window and the spread its smallest and largest; latencies are the median window's percentiles.\n", m.cores, m.cpu, m.memory_gib, m.kernel, self.placement, self.timing.warmup.as_secs_f64(), self.timing.repetitions, self.timing.duration.as_secs_f64());
        let d = &self.dataset;
        let _ = writeln!(o, "Data set: {} items ({} stores × {} products × {}), {} activity events ({} users × {} in the past 24 h), {} point keys with {}-byte values. Keys: uniform, and zipfian (exponent 0.99, hot keys scattered).\n", fmt_ops(d.items() as f64), d.seed.stores, d.seed.products, d.seed.items, fmt_ops(d.events() as f64), d.seed.users, d.seed.events_per_user, fmt_ops(d.keys as f64), d.value_bytes);
        let _ = writeln!(
            o,
            "| system | version and settings | load s |\n|---|---|---|"
        );
        for s in &self.systems {
            let loads: Vec<String> = s.load_secs.iter().map(|t| format!("{t:.1}")).collect();
            let _ = writeln!(
                o,
                "| {} | {} | {} |",
                s.name,
                s.description,
                loads.join(" + ")
            );
        }
        for s in &self.skipped {
            let _ = writeln!(
                o,
                "| {} | **skipped**: {} | |",
                s.system,
                s.reason.replace('|', "/")
            );
        }
        let _ = writeln!(o, "\nAnswers checked before measuring ({} sampled requests per workload, every variant):\n", super::prepare::CHECK_SAMPLES);
        for c in &self.checks {
            if c.disagreements.is_empty() {
                let _ = writeln!(o, "- {}: {} variants agree", c.workload.id(), c.variants);
            } else {
                let _ = writeln!(
                    o,
                    "- {}: **{}**",
                    c.workload.id(),
                    c.disagreements.join("; ")
                );
            }
        }
        let _ = writeln!(
            o,
            "\n### Aims (uniform keys, {} clients; best variant of each system)\n",
            self.clients
        );
        self.aims(o);
        for w in Workload::ALL {
            let rows: Vec<&Row> = self
                .rows
                .iter()
                .filter(|r| r.phase == Phase::Main && r.variant.workload == w)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(o, "\n### {}\n", w.title());
            self.results_table(o, &rows);
        }
        let sweep = self.sweep();
        let clients: std::collections::BTreeSet<usize> =
            sweep.values().flat_map(|m| m.keys().copied()).collect();
        if clients.len() > 1 {
            let _ = writeln!(
                o,
                "\n### Scaling with concurrency (uniform keys): ops/s (p99 ms)\n"
            );
            let header: Vec<String> = clients.iter().map(|c| format!("{c} clients")).collect();
            let _ = writeln!(
                o,
                "| workload | system and variant | {} |",
                header.join(" | ")
            );
            let _ = writeln!(o, "|---|---|{}", "---:|".repeat(clients.len()));
            for ((w, name), by_clients) in &sweep {
                let cells: Vec<String> = clients
                    .iter()
                    .map(|c| {
                        by_clients.get(c).map_or(String::new(), |m| {
                            format!("{} ({:.2})", fmt_ops(m.ops()), m.p99())
                        })
                    })
                    .collect();
                let _ = writeln!(o, "| {} | {name} | {} |", w.id(), cells.join(" | "));
            }
        }
        if let Some(g) = &self.grown {
            let _ = writeln!(o, "\n### Scaling with data ({} → {} items, {} → {} point keys; uniform keys, {} clients)\n", fmt_ops(self.dataset.items() as f64), fmt_ops(g.items() as f64), fmt_ops(self.dataset.keys as f64), fmt_ops(g.keys as f64), self.clients);
            let _ = writeln!(o, "| workload | system and variant | ops/s before | ops/s after | p99 ms before | p99 ms after |");
            let _ = writeln!(o, "|---|---|---:|---:|---:|---:|");
            for (r, after) in self.ok_rows().filter(|(r, _)| r.phase == Phase::Grown) {
                let before = self.ok_rows().find(|(b, _)| {
                    b.phase == Phase::Main
                        && b.distribution == Distribution::Uniform
                        && b.clients == r.clients
                        && b.variant.system == r.variant.system
                        && b.variant.name == r.variant.name
                        && b.variant.workload == r.variant.workload
                });
                let (ob, pb) = before.map_or((String::new(), String::new()), |(_, m)| {
                    (fmt_ops(m.ops()), format!("{:.3}", m.p99()))
                });
                let _ = writeln!(
                    o,
                    "| {} | {} {} | {ob} | {} | {pb} | {:.3} |",
                    r.variant.workload.id(),
                    r.variant.system,
                    r.variant.name,
                    fmt_ops(after.ops()),
                    after.p99()
                );
            }
        }
        let _ = writeln!(o, "\n### How each system answers\n\n| system | workload | variant | how |\n|---|---|---|---|");
        let mut seen = std::collections::BTreeSet::new();
        for r in &self.rows {
            if seen.insert((r.variant.system, r.variant.workload, r.variant.name.clone())) {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} |",
                    r.variant.system,
                    r.variant.workload.id(),
                    r.variant.name,
                    r.variant.how
                );
            }
        }
        out
    }

    /// The plots: throughput and p99 against concurrency, latency percentiles per workload.
    fn plots(&self) -> Vec<(String, String)> {
        let mut plots = Vec::new();
        let sweep = self.sweep();
        for w in [Workload::Q1, Workload::Get] {
            let lines: Vec<(&String, &BTreeMap<usize, &Measurement>)> = sweep
                .iter()
                .filter(|((workload, _), _)| *workload == w)
                .map(|((_, label), by_clients)| (label, by_clients))
                .collect();
            let clients: std::collections::BTreeSet<usize> =
                lines.iter().flat_map(|(_, m)| m.keys().copied()).collect();
            if clients.len() < 2 {
                continue;
            }
            let xs: Vec<String> = clients.iter().map(|c| c.to_string()).collect();
            for (metric, title, f) in [
                (
                    "throughput",
                    "ops/s",
                    (|m: &Measurement| m.ops()) as fn(&Measurement) -> f64,
                ),
                ("p99", "p99 latency, ms", |m: &Measurement| m.p99()),
            ] {
                let series: Vec<Series> = lines
                    .iter()
                    .map(|(label, by_clients)| Series {
                        name: (*label).clone(),
                        values: clients
                            .iter()
                            .map(|c| by_clients.get(c).map(|m| f(m)))
                            .collect(),
                    })
                    .collect();
                plots.push((
                    format!("{}-{metric}-vs-clients.svg", w.id()),
                    line_chart(
                        &format!("{}: {title} vs clients (uniform keys)", w.id()),
                        "concurrent clients",
                        title,
                        &xs,
                        &series,
                    ),
                ));
            }
        }
        for w in Workload::ALL {
            let rows: Vec<(&Row, &Measurement)> = self
                .ok_rows()
                .filter(|(r, _)| {
                    r.phase == Phase::Main
                        && r.distribution == Distribution::Uniform
                        && r.variant.workload == w
                })
                .collect();
            if rows.is_empty() {
                continue;
            }
            let xs: Vec<String> = ["p50", "p90", "p99", "p99.9"].map(String::from).to_vec();
            let series: Vec<Series> = rows
                .iter()
                .map(|(r, m)| Series {
                    name: r.variant.label(),
                    values: vec![Some(m.p50()), Some(m.p90()), Some(m.p99()), Some(m.p999())],
                })
                .collect();
            plots.push((
                format!("{}-latency.svg", w.id()),
                line_chart(
                    &format!(
                        "{}: latency percentiles, {} clients, uniform keys",
                        w.id(),
                        self.clients
                    ),
                    "percentile",
                    "ms",
                    &xs,
                    &series,
                ),
            ));
        }
        plots
    }

    /// Writes results.json, results.md and the plots into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::write(
            dir.join("results.json"),
            serde_json::to_string_pretty(self)?,
        )?;
        let mut md = self.markdown();
        let plots = self.plots();
        if !plots.is_empty() {
            md.push_str("\n### Plots\n\n");
        }
        for (name, svg) in plots {
            std::fs::write(dir.join(&name), svg)?;
            let _ = writeln!(md, "![{name}]({name})");
        }
        std::fs::write(dir.join("results.md"), md)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(fmt_ops(0.4), "0");
        assert_eq!(fmt_ops(999.0), "999");
        assert_eq!(fmt_ops(1234.0), "1,234");
        assert_eq!(fmt_ops(1_234_567.0), "1,234,567");
    }
}
