//! `notadb-bench compare`: the same data set and the same work against notadb, PostgreSQL,
//! Redis and NATS KV in one run, with the same client concurrency and key distributions;
//! writes markdown tables, a JSON file with every figure, and SVG plots.
//!
//! Phases: load the data set into every system that answers; check that the systems give the
//! same answers; measure every workload at `--clients`; sweep the concurrency of seed
//! question 1 and point get; grow the data set `--grow` times and measure both again.

mod dataset;
pub(crate) mod driver;
mod machine;
mod nats_kv;
mod notadb_target;
mod postgres;
mod prepare;
mod redis_target;
mod report;
pub(crate) mod svg;
mod workload;

use crate::cpu::Placement;
use anyhow::{bail, Context};
use clap::Args;
use dataset::Dataset;
use driver::{measure, Measurement, Timing};
use indicatif::{ProgressBar, ProgressStyle};
use notadb_cli::seed::SeedSize;
use prepare::{check_answers, load, warm};
use report::{Phase, Report, Row, SystemInfo};
use std::path::PathBuf;
use std::time::Duration;
use workload::{Distribution, Target, Variant, Workload};

/// How long a peer may take to answer before it is skipped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// Directory for results.md, results.json and the plots.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// Systems, comma separated: notadb, postgres, redis, nats-kv, or all.
    #[arg(long, default_value = "all")]
    pub systems: String,
    /// Workloads, comma separated: q1, q2, get, multi-get, put, or all.
    #[arg(long, default_value = "all")]
    pub workloads: String,
    /// Key distributions, comma separated: uniform, zipfian.
    #[arg(long, default_value = "uniform,zipfian")]
    pub distributions: String,
    /// Concurrent clients (each its own connection) of the workload tables.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Client counts of the concurrency sweep (seed question 1 and point get, uniform keys).
    #[arg(long, default_value = "1,4,16,64")]
    pub sweep: String,
    /// Growth factor of the data-set scaling phase (stores and point keys); 1 skips it.
    #[arg(long, default_value_t = 10)]
    pub grow: usize,
    /// Unmeasured time before each measurement.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Length of each measured window.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Measured windows per measurement; the tables give the median and the spread.
    #[arg(long, default_value_t = 3)]
    pub repetitions: usize,
    /// Keys of the point workloads.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: usize,
    /// Value size of the point workloads, bytes.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    #[command(flatten)]
    pub seed: SeedSize,
    /// A running notadb node (or cluster node) to use; without it the command starts one node
    /// (`notadb serve --with-examples`) on a temporary directory.
    #[arg(long)]
    pub notadb_addr: Option<String>,
    /// Block cache of the node this command starts, MiB: sized to hold the data set, as
    /// Redis holds it in memory and PostgreSQL in its buffers and the OS page cache.
    #[arg(long, default_value_t = 2048)]
    pub notadb_block_cache_mb: usize,
    /// Point cache (for `Get` and `MultiGet`) of the node this command starts, MiB: sized to
    /// hold the point keys (about 230 bytes each with 100-byte values), as Redis holds them.
    #[arg(long, default_value_t = 512)]
    pub notadb_point_cache_mb: usize,
    /// Row cache (for `Scan` and `Aggregate` inside one partition key) of the node this
    /// command starts, MiB: sized to hold the seed questions' groups (about 60 MB each for
    /// the items of every store and product and the activity of every user, at the default
    /// sizes), as Redis holds them.
    #[arg(long, default_value_t = 512)]
    pub notadb_row_cache_mb: usize,
    /// PostgreSQL server (any database of it: the benchmark works in `--postgres-db`).
    #[arg(
        long,
        env = "NOTADB_POSTGRES_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/postgres"
    )]
    pub postgres_url: String,
    /// Database the benchmark creates when missing and owns: its tables are replaced.
    #[arg(long, default_value = "notadb_bench")]
    pub postgres_db: String,
    /// Redis server; the benchmark's keys start with `notadb-bench:`.
    #[arg(
        long,
        env = "NOTADB_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    /// NATS server with JetStream; the benchmark owns bucket `notadb_bench_kv`.
    #[arg(
        long,
        env = "NOTADB_BENCH_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
}

fn parse_list(s: &str, what: &str) -> anyhow::Result<Vec<usize>> {
    s.split(',')
        .map(|c| c.trim().parse::<usize>().ok().filter(|n| *n > 0))
        .collect::<Option<Vec<_>>>()
        .with_context(|| {
            format!("{what}: expected positive numbers separated by commas, found `{s}`")
        })
}

const SYSTEMS: [&str; 4] = ["notadb", "postgres", "redis", "nats-kv"];

/// The systems `--systems` names.
fn parse_systems(s: &str) -> anyhow::Result<Vec<&str>> {
    let wanted: Vec<&str> = if s == "all" {
        SYSTEMS.to_vec()
    } else {
        s.split(',').map(str::trim).collect()
    };
    if let Some(bad) = wanted.iter().find(|s| !SYSTEMS.contains(s)) {
        bail!("--systems: unknown `{bad}` (known: {})", SYSTEMS.join(", "));
    }
    Ok(wanted)
}

/// Opens the systems asked for; one that does not answer is skipped with the reason.
async fn open_targets(
    args: &CompareArgs,
    placement: &Placement,
    report: &mut Report,
) -> anyhow::Result<Vec<Box<dyn Target>>> {
    let wanted = parse_systems(&args.systems)?;
    let mut targets: Vec<Box<dyn Target>> = Vec::new();
    for name in wanted {
        let opened: anyhow::Result<Box<dyn Target>> = match name {
            // A node this command starts may take longer than a peer's connect timeout.
            "notadb" => notadb_target::NotadbTarget::open(
                args.notadb_addr.as_deref(),
                notadb_target::NodeMemory {
                    block_cache_mb: args.notadb_block_cache_mb,
                    point_cache_mb: args.notadb_point_cache_mb,
                    row_cache_mb: args.notadb_row_cache_mb,
                },
                placement,
            )
            .await
            .map(|t| Box::new(t) as Box<dyn Target>),
            other => {
                let open = async {
                    Ok(match other {
                        "postgres" => Box::new(
                            postgres::PostgresTarget::open(&args.postgres_url, &args.postgres_db)
                                .await?,
                        ) as Box<dyn Target>,
                        "redis" => {
                            Box::new(redis_target::RedisTarget::open(&args.redis_url).await?)
                        }
                        _ => Box::new(nats_kv::NatsKvTarget::open(&args.nats_url).await?),
                    })
                };
                tokio::time::timeout(CONNECT_TIMEOUT, open)
                    .await
                    .unwrap_or_else(|_| {
                        Err(anyhow::anyhow!("no answer within {CONNECT_TIMEOUT:?}"))
                    })
            }
        };
        match opened {
            Ok(t) => targets.push(t),
            Err(e) => {
                let where_ = match name {
                    "notadb" => args
                        .notadb_addr
                        .clone()
                        .unwrap_or_else(|| "a node started here".into()),
                    "postgres" => args.postgres_url.clone(),
                    "redis" => args.redis_url.clone(),
                    _ => args.nats_url.clone(),
                };
                let reason = format!("{where_}: {e:#}");
                eprintln!("skipping {name}: {reason}");
                report.skip(name, reason);
            }
        }
    }
    if targets.is_empty() {
        bail!("no system to measure: every one was skipped");
    }
    Ok(targets)
}

fn spinner(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg:>40} [{bar:30}] {pos}/{len} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// One planned measurement.
struct Plan {
    phase: Phase,
    variant: Variant,
    target: usize,
    distribution: Distribution,
    clients: usize,
}

/// Every variant of `workloads` on every target, for each distribution and client count.
fn plans(
    targets: &[Box<dyn Target>],
    phase: Phase,
    workloads: &[Workload],
    distributions: &[Distribution],
    clients: &[usize],
) -> Vec<Plan> {
    let mut plans = Vec::new();
    for &w in workloads {
        for &distribution in distributions {
            for &c in clients {
                for (i, t) in targets.iter().enumerate() {
                    for variant in t.variants().into_iter().filter(|v| v.workload == w) {
                        plans.push(Plan {
                            phase,
                            variant,
                            target: i,
                            distribution,
                            clients: c,
                        });
                    }
                }
            }
        }
    }
    plans
}

async fn run_plans(
    targets: &[Box<dyn Target>],
    plans: Vec<Plan>,
    data: &Dataset,
    timing: Timing,
    report: &mut Report,
) {
    let bar = spinner(plans.len() as u64);
    for plan in plans {
        bar.set_message(format!(
            "{} {} c={}",
            plan.variant.system,
            plan.variant.name.chars().take(20).collect::<String>(),
            plan.clients
        ));
        let target = targets[plan.target].as_ref();
        let result: anyhow::Result<Measurement> = match target.cpu_meter().await {
            Ok(meter) => {
                measure(
                    target,
                    &meter,
                    &plan.variant,
                    plan.distribution,
                    plan.clients,
                    data,
                    timing,
                )
                .await
            }
            Err(e) => Err(e),
        };
        bar.inc(1);
        report.rows.push(Row {
            phase: plan.phase,
            variant: plan.variant,
            distribution: plan.distribution,
            clients: plan.clients,
            data_rows: data.items() + data.events() + data.keys,
            result: result.map_err(|e| format!("{e:#}")),
        });
    }
    bar.finish_and_clear();
}

pub async fn run(placement: &Placement, args: CompareArgs) -> anyhow::Result<()> {
    let workloads = Workload::parse(&args.workloads)?;
    let distributions = Distribution::parse(&args.distributions)?;
    let sweep = parse_list(&args.sweep, "--sweep")?;
    parse_systems(&args.systems)?;
    if [args.clients, args.repetitions, args.grow, args.keys].contains(&0) {
        bail!("--clients, --repetitions, --grow and --keys must be at least 1");
    }
    args.seed.validate()?;
    if args.duration.is_zero() {
        bail!("--duration must be positive");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let timing = Timing {
        warmup: args.warmup,
        duration: args.duration,
        repetitions: args.repetitions,
    };
    let data = Dataset {
        seed: args.seed,
        keys: args.keys,
        value_bytes: args.value_bytes,
        now_micros: notadb::record::now_micros(),
    };
    let mut report = Report::new(
        // The command as a user would type it: the binary by its name, not its path.
        std::iter::once("notadb-bench".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
        placement.describe(),
        timing,
        data,
        args.clients,
    );
    let mut targets = open_targets(&args, placement, &mut report).await?;
    report.systems = targets
        .iter()
        .map(|t| SystemInfo {
            name: t.name(),
            description: t.describe(),
            load_secs: Vec::new(),
        })
        .collect();
    println!(
        "loading {} rows into {}",
        data.new_rows(None),
        targets
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    load(&mut targets, None, &data, &mut report).await?;
    warm(&targets, None, &data).await?;
    check_answers(&targets, &workloads, &data, &mut report).await?;

    let main = plans(
        &targets,
        Phase::Main,
        &workloads,
        &distributions,
        &[args.clients],
    );
    println!(
        "measuring {} workload rows at {} clients",
        main.len(),
        args.clients
    );
    run_plans(&targets, main, &data, timing, &mut report).await;

    let scaling: Vec<Workload> = workloads
        .iter()
        .copied()
        .filter(|w| matches!(w, Workload::Q1 | Workload::Get))
        .collect();
    let sweep_clients: Vec<usize> = sweep
        .iter()
        .copied()
        .filter(|c| *c != args.clients || !distributions.contains(&Distribution::Uniform))
        .collect();
    let sweeps = plans(
        &targets,
        Phase::Sweep,
        &scaling,
        &[Distribution::Uniform],
        &sweep_clients,
    );
    if !sweeps.is_empty() {
        println!("concurrency sweep: {} rows", sweeps.len());
        run_plans(&targets, sweeps, &data, timing, &mut report).await;
    }
    if args.grow > 1 && !scaling.is_empty() {
        let grown = data.grown(args.grow);
        println!(
            "growing the data set {}x: {} more rows per system",
            args.grow,
            grown.new_rows(Some(&data))
        );
        load(&mut targets, Some(&data), &grown, &mut report).await?;
        warm(&targets, Some(&data), &grown).await?;
        report.grown = Some(grown);
        let grown_plans = plans(
            &targets,
            Phase::Grown,
            &scaling,
            &[Distribution::Uniform],
            &[args.clients],
        );
        run_plans(&targets, grown_plans, &grown, timing, &mut report).await;
    }
    drop(targets);
    report.write(&args.out)?;
    println!("{}", report.markdown());
    println!("wrote {}", args.out.display());
    Ok(())
}
