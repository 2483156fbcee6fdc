//! What the comparison runs: workloads, key distributions, the parameters of one request, and
//! the interface every compared system implements.

use super::dataset::Dataset;
use crate::cpu::Meter;
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::Zipf;
use serde::Serialize;

/// Zipfian exponent (YCSB's default).
pub const ZIPF_EXPONENT: f64 = 0.99;
/// Keys per batched point read (`MultiGet`, `MGET`, `= ANY($1)`).
pub const BATCH_KEYS: usize = 100;
/// Rows of the seed-question answers.
pub const TOP_N: usize = 10;

/// One kind of work, the same on every system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Seed question 1: top-10 available items of a store and product by score.
    Q1,
    /// Seed question 2: most viewed items of a user in the past hour.
    Q2,
    /// Point get of one value.
    Get,
    /// Point get of `BATCH_KEYS` values in one request.
    MultiGet,
    /// Overwrite one value.
    Put,
}

impl Workload {
    pub const ALL: [Workload; 5] = [
        Workload::Q1,
        Workload::Q2,
        Workload::Get,
        Workload::MultiGet,
        Workload::Put,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Workload::Q1 => "q1",
            Workload::Q2 => "q2",
            Workload::Get => "get",
            Workload::MultiGet => "multi-get",
            Workload::Put => "put",
        }
    }

    pub fn title(self) -> String {
        match self {
            Workload::Q1 => "Seed question 1: top 10 available items of a store and product".into(),
            Workload::Q2 => {
                "Seed question 2: the 10 items a user viewed most in the past hour".into()
            }
            Workload::Get => "Point get of a value".into(),
            Workload::MultiGet => format!("Batched point get: {BATCH_KEYS} keys per request"),
            Workload::Put => "Write one value (overwrite), acknowledged".into(),
        }
    }

    pub fn parse(s: &str) -> anyhow::Result<Vec<Workload>> {
        if s == "all" {
            return Ok(Workload::ALL.to_vec());
        }
        s.split(',')
            .map(|w| {
                Workload::ALL
                    .into_iter()
                    .find(|k| k.id() == w.trim())
                    .ok_or_else(|| {
                        let known: Vec<_> = Workload::ALL.iter().map(|k| k.id()).collect();
                        anyhow::anyhow!("unknown workload `{w}` (known: {})", known.join(", "))
                    })
            })
            .collect()
    }
}

/// How a request picks its key (and its store, product or user).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    Uniform,
    /// Zipfian ranks (exponent `ZIPF_EXPONENT`), scattered over the key space so the hot keys
    /// are not neighbours.
    Zipfian,
}

impl Distribution {
    pub fn id(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Zipfian => "zipfian",
        }
    }

    pub fn parse(s: &str) -> anyhow::Result<Vec<Distribution>> {
        s.split(',')
            .map(|d| match d.trim() {
                "uniform" => Ok(Distribution::Uniform),
                "zipfian" => Ok(Distribution::Zipfian),
                other => anyhow::bail!("unknown distribution `{other}` (known: uniform, zipfian)"),
            })
            .collect()
    }
}

/// Draws indexes `0..n` from a distribution; one per client, seeded, so runs repeat.
pub struct Picker {
    rng: StdRng,
    distribution: Distribution,
}

/// Multiplier that scatters zipfian ranks (a prime, coprime with any data-set size used here).
const SCATTER: u64 = 2_654_435_761;

impl Picker {
    pub fn new(distribution: Distribution, seed: u64) -> Self {
        Picker {
            rng: StdRng::seed_from_u64(seed),
            distribution,
        }
    }

    pub fn index(&mut self, n: usize) -> usize {
        match self.distribution {
            Distribution::Uniform => self.rng.random_range(0..n),
            Distribution::Zipfian => {
                let zipf = Zipf::new(n as f64, ZIPF_EXPONENT).expect("n >= 1, exponent > 0");
                let rank = (self.rng.sample(zipf) as u64).clamp(1, n as u64) - 1;
                (rank.wrapping_mul(SCATTER) % n as u64) as usize
            }
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.rng.random()
    }
}

/// The parameters of one request: each system turns them into its own query.
#[derive(Clone, Debug, Default)]
pub struct Params {
    pub store: usize,
    pub product: usize,
    pub user: usize,
    pub key: usize,
    pub keys: Vec<usize>,
    /// Distinguishes the values a `Put` writes.
    pub version: u64,
}

impl Params {
    pub fn draw(workload: Workload, picker: &mut Picker, data: &Dataset) -> Params {
        let mut p = Params::default();
        match workload {
            Workload::Q1 => {
                p.store = picker.index(data.seed.stores);
                p.product = picker.index(data.seed.products);
            }
            Workload::Q2 => p.user = picker.index(data.seed.users),
            Workload::Get => p.key = picker.index(data.keys),
            Workload::MultiGet => {
                p.keys = (0..BATCH_KEYS).map(|_| picker.index(data.keys)).collect()
            }
            Workload::Put => {
                p.key = picker.index(data.keys);
                p.version = picker.next_u64();
            }
        }
        p
    }
}

/// What a request returned, reduced to what every system must agree on (scores of the top
/// items, view counts, values found).
pub type Answer = Vec<String>;

/// Scores of the top items, as every system reports them (seed question 1).
pub fn score_answer(scores: impl IntoIterator<Item = f64>) -> Answer {
    scores.into_iter().map(|s| format!("{s:.4}")).collect()
}

/// One client's request function.
pub type Op = Box<dyn FnMut(&Params) -> BoxFuture<'static, anyhow::Result<Answer>> + Send>;

/// One way a system answers a workload.
#[derive(Clone, Debug, Serialize)]
pub struct Variant {
    pub system: &'static str,
    pub workload: Workload,
    /// Short name, e.g. `Scan` or `handler top_available`.
    pub name: String,
    /// How it is implemented, for the report.
    pub how: String,
}

impl Variant {
    pub fn new(system: &'static str, workload: Workload, name: &str, how: &str) -> Variant {
        Variant {
            system,
            workload,
            name: name.into(),
            how: how.into(),
        }
    }

    /// `system name`, as tables, plots and checks name it.
    pub fn label(&self) -> String {
        format!("{} {}", self.system, self.name)
    }
}

/// A system under comparison.
#[async_trait::async_trait]
pub trait Target: Send + Sync {
    /// `notadb`, `postgres`, `redis` or `nats-kv`.
    fn name(&self) -> &'static str;
    /// Server version and the settings that matter to the figures (durability above all).
    fn describe(&self) -> String;
    /// The ways it answers each workload; none for a workload it has no fitting design for.
    fn variants(&self) -> Vec<Variant>;
    /// Loads (or extends to) `data`, from the part `from` already holds.
    async fn load(&mut self, from: Option<&Dataset>, data: &Dataset) -> anyhow::Result<()>;
    /// One client: its own connection, and the request function of `variant`.
    async fn connect(&self, variant: &Variant, data: &Dataset) -> anyhow::Result<Op>;
    /// Reads the server's CPU time (peers: their processes on this machine, by name).
    async fn cpu_meter(&self) -> anyhow::Result<Meter>;
}
