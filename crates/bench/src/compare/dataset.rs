//! The generated data set every system loads: the seed data (items and activity) and the
//! point-workload keys with their values.

use notadb_cli::seed::SeedSize;
use std::ops::Range;

/// The data set; everything in it is a function of these sizes and `now_micros`.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Dataset {
    #[serde(serialize_with = "seed_size")]
    pub seed: SeedSize,
    /// Keys of the point workloads.
    pub keys: usize,
    pub value_bytes: usize,
    /// Activity events fall in the 24 hours before this instant.
    pub now_micros: i64,
}

fn seed_size<S: serde::Serializer>(s: &SeedSize, ser: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    serde_json::json!({
        "stores": s.stores, "products": s.products, "items_per_store_product": s.items,
        "users": s.users, "events_per_user": s.events_per_user,
    })
    .serialize(ser)
}

impl Dataset {
    /// The same data set with `factor` times the stores and the point keys (users stay).
    pub fn grown(&self, factor: usize) -> Dataset {
        let mut grown = *self;
        grown.seed.stores *= factor;
        grown.keys *= factor;
        grown
    }

    pub fn items(&self) -> usize {
        self.seed.stores * self.seed.products * self.seed.items
    }

    pub fn events(&self) -> usize {
        self.seed.users * self.seed.events_per_user
    }

    /// Stores that `self` holds and `from` does not.
    pub fn new_stores(&self, from: Option<&Dataset>) -> Range<usize> {
        from.map_or(0, |f| f.seed.stores)..self.seed.stores
    }

    /// Users whose activity `self` holds and `from` does not.
    pub fn new_users(&self, from: Option<&Dataset>) -> Range<usize> {
        from.map_or(0, |f| f.seed.users)..self.seed.users
    }

    /// Point keys that `self` holds and `from` does not.
    pub fn new_keys(&self, from: Option<&Dataset>) -> Range<usize> {
        from.map_or(0, |f| f.keys)..self.keys
    }

    /// Rows (items, events and point keys) `self` holds and `from` does not.
    pub fn new_rows(&self, from: Option<&Dataset>) -> u64 {
        let per_store = self.seed.products * self.seed.items;
        (self.new_stores(from).len() * per_store
            + self.new_users(from).len() * self.seed.events_per_user
            + self.new_keys(from).len()) as u64
    }

    pub fn key(i: usize) -> String {
        format!("key-{i:08}")
    }

    /// The value of point key `i`; `version` 0 is the loaded one, a `Put` writes others.
    pub fn value(&self, i: usize, version: u64) -> Vec<u8> {
        // splitmix64 seeded by key and version, then lowercase letters.
        let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ version;
        (0..self.value_bytes)
            .map(|_| {
                x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                b'a' + ((z ^ (z >> 31)) % 26) as u8
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Dataset {
        Dataset {
            seed: SeedSize {
                stores: 2,
                products: 3,
                items: 4,
                users: 5,
                events_per_user: 6,
            },
            keys: 100,
            value_bytes: 100,
            now_micros: 0,
        }
    }

    #[test]
    fn values_are_deterministic_and_differ_by_key_and_version() {
        let d = data();
        assert_eq!(d.value(7, 0), d.value(7, 0));
        assert_eq!(d.value(7, 0).len(), 100);
        assert_ne!(d.value(7, 0), d.value(8, 0));
        assert_ne!(d.value(7, 0), d.value(7, 1));
        assert!(d.value(7, 0).iter().all(u8::is_ascii_lowercase));
    }

    #[test]
    fn growing_adds_only_new_stores_and_keys() {
        let d = data();
        let g = d.grown(10);
        assert_eq!(g.new_stores(Some(&d)), 2..20);
        assert_eq!(g.new_keys(Some(&d)), 100..1000);
        assert!(g.new_users(Some(&d)).is_empty());
        assert_eq!(g.new_rows(Some(&d)), 18 * 12 + 900);
        assert_eq!(d.new_rows(None), 2 * 12 + 5 * 6 + 100);
    }
}
