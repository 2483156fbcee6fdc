//! What happens before measuring: loading the data set into every system, reading it all
//! once (warm caches), and checking that every system gives the same answers.

use super::dataset::Dataset;
use super::report::Report;
use super::workload::{self, Distribution, Params, Picker, Target, Variant, Workload};
use anyhow::Context;
use std::collections::BTreeMap;
use std::time::Instant;

/// Sampled requests per workload whose answers must agree across systems.
pub const CHECK_SAMPLES: usize = 20;

/// Loads `data` into every target, recording the time each took.
pub async fn load(
    targets: &mut [Box<dyn Target>],
    from: Option<&Dataset>,
    data: &Dataset,
    report: &mut Report,
) -> anyhow::Result<()> {
    for t in targets.iter_mut() {
        let started = Instant::now();
        t.load(from, data)
            .await
            .with_context(|| format!("loading {}", t.name()))?;
        println!(
            "{}: loaded in {:.1} s",
            t.name(),
            started.elapsed().as_secs_f64()
        );
        report.loaded(t.name(), started.elapsed());
    }
    Ok(())
}

/// Requests in flight while warming.
const WARM_CONCURRENCY: usize = 16;

/// Reads the whole data set once on every target (the first variant of each read workload,
/// point keys by batch where a system has batches), so measurements start from the caches a
/// long-running service would have.
pub async fn warm(
    targets: &[Box<dyn Target>],
    from: Option<&Dataset>,
    data: &Dataset,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    for t in targets {
        let started = Instant::now();
        let variants = t.variants();
        let first = |w: Workload| variants.iter().find(|v| v.workload == w);
        let mut requests: Vec<(&Variant, Params)> = Vec::new();
        if let Some(v) = first(Workload::Q1) {
            for store in data.new_stores(from) {
                for product in 0..data.seed.products {
                    requests.push((
                        v,
                        Params {
                            store,
                            product,
                            ..Params::default()
                        },
                    ));
                }
            }
        }
        if let Some(v) = first(Workload::Q2) {
            requests.extend(data.new_users(from).map(|user| {
                (
                    v,
                    Params {
                        user,
                        ..Params::default()
                    },
                )
            }));
        }
        let keys = data.new_keys(from);
        if let Some(v) = first(Workload::MultiGet) {
            let all: Vec<usize> = keys.collect();
            requests.extend(all.chunks(workload::BATCH_KEYS).map(|c| {
                (
                    v,
                    Params {
                        keys: c.to_vec(),
                        ..Params::default()
                    },
                )
            }));
        } else if let Some(v) = first(Workload::Get) {
            requests.extend(keys.map(|key| {
                (
                    v,
                    Params {
                        key,
                        ..Params::default()
                    },
                )
            }));
        }
        let bar = notadb_cli::load::progress(requests.len() as u64, &format!("warm {}", t.name()));
        let mut ops = BTreeMap::new();
        for (v, _) in &requests {
            if let std::collections::btree_map::Entry::Vacant(slot) =
                ops.entry((v.workload, v.name.clone()))
            {
                let mut pool = Vec::new();
                for _ in 0..WARM_CONCURRENCY {
                    pool.push(std::sync::Arc::new(tokio::sync::Mutex::new(
                        t.connect(v, data).await?,
                    )));
                }
                slot.insert(pool);
            }
        }
        let mut done = futures::stream::iter(requests.iter().enumerate())
            .map(|(i, (v, p))| {
                let op = ops[&(v.workload, v.name.clone())][i % WARM_CONCURRENCY].clone();
                async move {
                    let mut op = op.lock().await;
                    op(p).await
                }
            })
            .buffer_unordered(WARM_CONCURRENCY);
        while let Some(r) = done.next().await {
            r.with_context(|| format!("warming {}", t.name()))?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        println!(
            "{}: read the data set once in {:.1} s",
            t.name(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Asks every target the same sampled questions and records where answers differ.
pub async fn check_answers(
    targets: &[Box<dyn Target>],
    workloads: &[Workload],
    data: &Dataset,
    report: &mut Report,
) -> anyhow::Result<()> {
    for &workload in workloads.iter().filter(|w| **w != Workload::Put) {
        let mut picker = Picker::new(Distribution::Uniform, 99);
        let samples: Vec<Params> = (0..CHECK_SAMPLES)
            .map(|_| Params::draw(workload, &mut picker, data))
            .collect();
        let mut answers: Vec<(String, Vec<Vec<String>>)> = Vec::new();
        for t in targets {
            for v in t.variants().into_iter().filter(|v| v.workload == workload) {
                let mut op = t.connect(&v, data).await?;
                let mut got = Vec::new();
                for p in &samples {
                    got.push(
                        op(p).await.with_context(|| {
                            format!("{} {}: checking answers", v.system, v.name)
                        })?,
                    );
                }
                answers.push((v.label(), got));
            }
        }
        let mut disagreements = Vec::new();
        if let Some((first, reference)) = answers.first() {
            for (name, got) in &answers[1..] {
                let differing = reference.iter().zip(got).filter(|(a, b)| a != b).count();
                if differing > 0 {
                    disagreements.push(format!(
                        "{name} differs from {first} on {differing} of {CHECK_SAMPLES}"
                    ));
                }
            }
        }
        report.checked(workload, answers.len(), disagreements);
    }
    Ok(())
}
