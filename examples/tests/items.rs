//! The seed handler `top_available` answers the available items of a store and product,
//! best score first, as JSON objects holding each item's stored value.

use notadb::{Consistency, Element, JsonHandler, Mutation, NodeBuilder, NodeConfig, ValueInput};
use notadb_examples::items;
use serde_json::json;

fn item(store: &str, product: &str, score: f64, id: &str, available: bool) -> Mutation {
    Mutation::Put {
        keyspace: "items".into(),
        key: vec![
            Element::String(store.into()),
            Element::String(product.into()),
            Element::F64(score),
            Element::String(id.into()),
        ],
        value: ValueInput::Json(format!(
            r#"{{"available":{available},"name":"n \"{id}\""}}"#
        )),
    }
}

#[tokio::test]
async fn top_available_answers_the_best_available_items() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeBuilder::new(NodeConfig {
        data_dir: dir.path().to_path_buf(),
        partitions: 8,
        ..NodeConfig::default()
    })
    .keyspace(items::schema())
    .handler("top_available", JsonHandler(items::top_available))
    .open()
    .await
    .expect("open");
    let token = node
        .write(vec![
            item("s1", "p", 3.5, "a", true),
            item("s1", "p", 9.0, "b", false),
            item("s1", "p", 1.0, "c", true),
            item("s1", "p", 7.0, "d", true),
            item("s1", "q", 8.0, "e", true),
        ])
        .await
        .expect("write");
    let other = node
        .write(vec![item("s2", "p", 8.0, "f", true)])
        .await
        .expect("write");
    let c = Consistency::tokens(vec![token, other]);
    let ask = |args| {
        node.query(
            "top_available",
            "items",
            vec![Element::String("s1".into())],
            args,
            &c,
        )
    };
    let top = |limit: u64| ask(json!({"product": "p", "limit": limit}));
    let row = |id: &str, score: f64| json!({"item": {"available": true, "name": format!("n \"{id}\"")}, "item_id": id, "score": score});
    assert_eq!(
        top(10).await.expect("query"),
        json!([row("d", 7.0), row("a", 3.5), row("c", 1.0)])
    );
    assert_eq!(
        top(2).await.expect("query"),
        json!([row("d", 7.0), row("a", 3.5)])
    );
    assert_eq!(top(0).await.expect("query"), json!([]));
    let err = ask(json!({"limit": 3})).await.expect_err("no product");
    assert!(err.to_string().contains("args.product"), "{err}");
}
