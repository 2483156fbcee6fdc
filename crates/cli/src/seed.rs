//! The seed data set: stores, products and items; users and their activity. Generated from a
//! fixed random seed, so every run (and every peer in a benchmark) gets the same data.

use notadb_client::{json_value, prefix_range, proto, tuple, Element, Token};
use notadb_proto::{element_to_proto, token_to_proto};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// Product names; stores carry `products` of them (cycled with a suffix beyond 20).
pub const PRODUCTS: [&str; 20] = [
    "shoes", "shirts", "jackets", "hats", "bags", "watches", "socks", "belts", "scarves", "gloves",
    "jeans", "skirts", "dresses", "coats", "boots", "sandals", "ties", "wallets", "glasses",
    "rings",
];
/// Distinct items users interact with.
pub const CATALOG_ITEMS: usize = 1_000;
const DAY_MICROS: i64 = 24 * 3_600_000_000;

/// Sizes of the data set (flags of `demo` and `bench compare`).
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct SeedSize {
    /// Stores.
    #[arg(long, default_value_t = 100)]
    pub stores: usize,
    /// Products per store.
    #[arg(long, default_value_t = 20)]
    pub products: usize,
    /// Items per store and product.
    #[arg(long, default_value_t = 200)]
    pub items: usize,
    /// Users.
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Activity events per user, spread over the past 24 hours.
    #[arg(long, default_value_t = 100)]
    pub events_per_user: usize,
}

impl SeedSize {
    /// Every size must be at least 1.
    pub fn validate(&self) -> anyhow::Result<()> {
        if [
            self.stores,
            self.products,
            self.items,
            self.users,
            self.events_per_user,
        ]
        .contains(&0)
        {
            anyhow::bail!(
                "--stores, --products, --items, --users and --events-per-user must be at least 1"
            );
        }
        Ok(())
    }
}

/// The id of store `s`: `store-0000`, `store-0001`, ...
pub fn store(s: usize) -> String {
    format!("store-{s:04}")
}

/// The name of product `p`: [`PRODUCTS`] in order, then again with suffix `-1`, `-2`, ...
pub fn product(p: usize) -> String {
    match p / PRODUCTS.len() {
        0 => PRODUCTS[p].to_string(),
        n => format!("{}-{n}", PRODUCTS[p % PRODUCTS.len()]),
    }
}

/// The id of user `u`: `user-000000`, `user-000001`, ...
pub fn user(u: usize) -> String {
    format!("user-{u:06}")
}

fn put(keyspace: &str, key: Vec<Element>, value: proto::Value) -> proto::Mutation {
    proto::Mutation {
        op: Some(proto::mutation::Op::Put(proto::PutRequest {
            keyspace: keyspace.into(),
            key: Some(tuple(&key)),
            value: Some(value),
        })),
    }
}

/// One item of a store's catalogue (a row of keyspace `items`).
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// Key element `store_id`: the store's id.
    pub store: String,
    /// Key element `product`: the product's name.
    pub product: String,
    /// Key element `score`: in [0, 1], rounded to four decimals.
    pub score: f64,
    /// Key element `item_id`: `item-{s}-{p}-{i}`, from the store, product and item indices.
    pub item: String,
    /// Value field `available`: true for about half of the items.
    pub available: bool,
    /// Value field `price`: in [0, 200], rounded to cents.
    pub price: f64,
    /// Value field `name`: `{product} #{i}`.
    pub name: String,
}

impl Item {
    /// The JSON value notadb stores (and Redis keeps as the item record).
    pub fn value(&self) -> serde_json::Value {
        json!({"available": self.available, "price": self.price, "name": self.name})
    }
}

/// The items of one store and product, generated from a seed of their own.
pub fn items(size: &SeedSize, s: usize, p: usize) -> Vec<Item> {
    let mut rng = StdRng::seed_from_u64(((s * 1_000 + p) as u64) << 8 | 1);
    (0..size.items)
        .map(|i| {
            let score = (rng.random::<f64>() * 1e4).round() / 1e4;
            let available = rng.random_bool(0.5);
            let price = (rng.random::<f64>() * 20_000.0).round() / 100.0;
            Item {
                store: store(s),
                product: product(p),
                score,
                item: format!("item-{s}-{p}-{i}"),
                available,
                price,
                name: format!("{} #{i}", product(p)),
            }
        })
        .collect()
}

/// The items of one store and product: one write (all in the store's partition).
pub fn items_batch(size: &SeedSize, s: usize, p: usize) -> Vec<proto::Mutation> {
    items(size, s, p)
        .into_iter()
        .map(|item| {
            let value = json_value(&item.value());
            let key = vec![
                Element::String(item.store),
                Element::String(item.product),
                Element::F64(item.score),
                Element::String(item.item),
            ];
            put("items", key, value)
        })
        .collect()
}

/// Index of an item users interact with: skewed so a few items are popular.
pub fn popular_item(rng: &mut StdRng) -> usize {
    ((rng.random::<f64>().powi(3)) * CATALOG_ITEMS as f64) as usize
}

/// One event of a user's activity (a row of keyspace `activity`).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Key element `user_id`: the user's id.
    pub user: String,
    /// Key element `ts`: when the event happened, in microseconds since the Unix epoch.
    pub ts_micros: i64,
    /// Key element `feature`: `view` (70 %), `click` (20 %) or `purchase` (10 %).
    pub feature: &'static str,
    /// Key element `item_id`: `item-{n}`, with `n` from [`popular_item`].
    pub item: String,
}

/// The activity of one user over the 24 hours before `now_micros`.
pub fn events(size: &SeedSize, u: usize, now_micros: i64) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64((u as u64) << 8 | 2);
    (0..size.events_per_user)
        .map(|_| {
            let ts_micros = now_micros - rng.random_range(0..DAY_MICROS);
            let feature = match rng.random_range(0..10) {
                0..=6 => "view",
                7 | 8 => "click",
                _ => "purchase",
            };
            Event {
                user: user(u),
                ts_micros,
                feature,
                item: format!("item-{}", popular_item(&mut rng)),
            }
        })
        .collect()
}

/// The activity of one user over the 24 hours before `now_micros`: one write.
pub fn activity_batch(size: &SeedSize, u: usize, now_micros: i64) -> Vec<proto::Mutation> {
    events(size, u, now_micros)
        .into_iter()
        .map(|event| {
            let key = vec![
                Element::String(event.user),
                Element::Timestamp(event.ts_micros),
                Element::String(event.feature.into()),
                Element::String(event.item),
            ];
            put(
                "activity",
                key,
                proto::Value {
                    kind: Some(proto::value::Kind::Bytes(Vec::new())),
                },
            )
        })
        .collect()
}

/// Seed question 1 as a built-in scan: available items of a store and product, best score
/// first, top 10.
pub fn top_items_request(store: &str, product: &str, tokens: &[Token]) -> proto::ScanRequest {
    proto::ScanRequest {
        keyspace: "items".into(),
        range: Some(prefix_range(&[
            Element::String(store.into()),
            Element::String(product.into()),
        ])),
        limit: 10,
        reverse: false,
        filters: vec![proto::Filter {
            target: Some(proto::filter::Target::Field("available".into())),
            op: proto::FilterOp::Eq as i32,
            element_value: None,
            json_value: "true".into(),
        }],
        tokens: tokens.iter().copied().map(token_to_proto).collect(),
    }
}

/// Seed question 2 as a built-in aggregate: `view` events of a user in the past hour,
/// counted by item, top 10.
pub fn most_viewed_request(user: &str) -> proto::AggregateRequest {
    proto::AggregateRequest {
        keyspace: "activity".into(),
        range: Some(prefix_range(&[Element::String(user.into())])),
        filters: vec![proto::Filter {
            target: Some(proto::filter::Target::Element("feature".into())),
            op: proto::FilterOp::Eq as i32,
            element_value: Some(element_to_proto(&Element::String("view".into()))),
            json_value: String::new(),
        }],
        function: proto::AggregateFunction::Count as i32,
        field: String::new(),
        group_by: "item_id".into(),
        top_k: 10,
        window: Some(proto::TimeWindow {
            element: "ts".into(),
            from_micros: None,
            to_micros: None,
            last_micros: Some(notadb_examples::activity::HOUR_MICROS),
        }),
        tokens: vec![],
    }
}
