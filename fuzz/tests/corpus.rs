//! Runs every fuzz check over the checked-in corpus (`corpus/<check>/`) and over deterministic
//! mutations of the seeds: flipped bits, cut ends, inserted and repeated bytes. A short, stable
//! stand-in for libFuzzer that CI runs; `cargo +nightly fuzz run <check>` searches further and
//! adds what it finds to the same corpus.

use std::path::Path;

/// Mutants per seed: the cheap checks run many, the log segment (a file and a log open per
/// input) fewer.
fn mutants(check: &str) -> usize {
    if check == "log_segment" {
        500
    } else {
        20_000
    }
}

/// xorshift64: a fixed sequence, so a failure repeats.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(5) {
            0 if !bytes.is_empty() => {
                let at = at.min(bytes.len() - 1);
                bytes[at] ^= 1 << rng.below(8);
            }
            1 => bytes.truncate(at),
            2 => bytes.insert(at, rng.next() as u8),
            3 if !bytes.is_empty() => {
                let at = at.min(bytes.len() - 1);
                let b = bytes[at];
                bytes.splice(at..at, std::iter::repeat_n(b, 1 + rng.below(8)));
            }
            _ => {
                let end = (at + 1 + rng.below(8)).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
        }
    }
    bytes
}

fn corpus(check: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(check);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read(f).expect("read a corpus file"))
        .collect()
}

#[test]
fn every_check_passes_its_corpus_and_mutations_of_its_seeds() {
    for &(name, check) in notadb_fuzz::CHECKS {
        let corpus = corpus(name);
        assert!(!corpus.is_empty(), "corpus/{name} holds no inputs");
        for input in &corpus {
            check(input);
        }
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for seed in notadb_fuzz::seeds::seeds(name) {
            check(&seed);
            for _ in 0..mutants(name) {
                check(&mutate(&seed, &mut rng));
            }
        }
    }
}

/// The seeds are valid inputs: a decoder that refused one would make the mutations above
/// test only the refusal path.
#[test]
fn seeds_are_accepted() {
    use notadb_fuzz::seeds::seeds;
    for s in seeds("record") {
        notadb_record::Record::decode(&s).expect("a record seed decodes");
    }
    for s in seeds("txn_entry") {
        notadb_txn::Entry::decode(&s).expect("a transaction entry seed decodes");
    }
    for s in seeds("txn_report") {
        notadb_txn::decode_report(&s).expect("a report seed decodes");
    }
}

/// Writes the seeds into `corpus/` (run once when a check or its seeds change):
/// `cargo test --release --test corpus -- --ignored write_seed_corpus`.
#[test]
#[ignore]
fn write_seed_corpus() {
    for &(name, _) in notadb_fuzz::CHECKS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(name);
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        for (i, seed) in notadb_fuzz::seeds::seeds(name).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed).expect("write a seed");
        }
    }
}
