//! The `notadb` command against a real node process.

mod harness;

use harness::*;
use serde_json::Value;

#[test]
fn keyspace_data_and_load_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&dir.path().join("data"));
    let created = ok(&node.cli(&[
        "keyspace",
        "create",
        "items",
        "--key",
        "store_id:string,product:string,score:f64:desc,item_id:string",
        "--partition-by",
        "1",
        "--value",
        "json",
    ]));
    assert!(created.contains("\"partition_by\": 1"), "{created}");
    ok(&node.cli(&[
        "put",
        "items",
        r#"["s1","shoes",0.5,"a"]"#,
        r#"{"available":true,"price":10}"#,
    ]));
    ok(&node.cli(&[
        "put",
        "items",
        r#"["s1","shoes",0.9,"b"]"#,
        r#"{"available":false,"price":30}"#,
    ]));
    ok(&node.cli(&[
        "put",
        "items",
        r#"["s1","shoes",0.7,"c"]"#,
        r#"{"available":true,"price":20}"#,
    ]));
    let got = ok(&node.cli(&["get", "items", r#"["s1","shoes",0.5,"a"]"#]));
    assert_eq!(
        serde_json::from_str::<Value>(&got).expect("json")["price"],
        10
    );

    let scan = ok(&node.cli(&[
        "scan",
        "items",
        "--prefix",
        r#"["s1","shoes"]"#,
        "--where",
        "available=true",
    ]));
    let ids: Vec<String> = scan
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("json")["key"][3]
                .as_str()
                .expect("id")
                .to_string()
        })
        .collect();
    assert_eq!(ids, ["c", "a"], "best score first, available only");

    let agg = ok(&node.cli(&[
        "aggregate",
        "items",
        "--prefix",
        r#"["s1"]"#,
        "--fn",
        "sum",
        "--field",
        "price",
        "--group-by",
        "product",
    ]));
    let group: Value = serde_json::from_str(agg.trim()).expect("json");
    assert_eq!(
        (group["group"].as_str(), group["value"].as_f64()),
        (Some("shoes"), Some(60.0))
    );

    ok(&node.cli(&["delete", "items", r#"["s1","shoes",0.5,"a"]"#]));
    let err = failed(&node.cli(&["get", "items", r#"["s1","shoes",0.5,"a"]"#]));
    assert!(err.contains("not found"), "{err}");

    let jsonl = dir.path().join("items.jsonl");
    let lines: Vec<String> = (0..50)
        .map(|i| {
            format!(
                r#"{{"key": ["s{}", "hats", {}, "h{i}"], "value": {{"available": true}}}}"#,
                i % 5,
                f64::from(i) / 100.0
            )
        })
        .collect();
    std::fs::write(&jsonl, lines.join("\n")).expect("write jsonl");
    assert!(
        ok(&node.cli(&["load", "items", jsonl.to_str().expect("utf-8")]))
            .contains("loaded 50 rows")
    );
    let csv = dir.path().join("items.csv");
    std::fs::write(&csv, "store_id,product,score,item_id,available,price\ns9,bags,0.5,x1,true,5\ns9,bags,0.25,x2,false,6\n").expect("write csv");
    assert!(
        ok(&node.cli(&["load", "items", csv.to_str().expect("utf-8")])).contains("loaded 2 rows")
    );
    let scan = ok(&node.cli(&["scan", "items", "--prefix", r#"["s9"]"#]));
    assert_eq!(scan.lines().count(), 2);
    let first: Value = serde_json::from_str(scan.lines().next().expect("row")).expect("json");
    assert_eq!(first["value"]["price"], 5);
    let count = ok(&node.cli(&["aggregate", "items", "--where-key", "product=hats"]));
    assert_eq!(
        serde_json::from_str::<Value>(count.trim()).expect("json")["value"],
        50.0
    );

    // A key repeated across writes of one partition ends with its last row.
    let repeated = dir.path().join("repeated.jsonl");
    let lines: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"key": ["r", "p", 1.0, "same"], "value": {{"n": {i}}}}}"#))
        .collect();
    std::fs::write(&repeated, lines.join("\n")).expect("write jsonl");
    ok(&node.cli(&[
        "load",
        "items",
        repeated.to_str().expect("utf-8"),
        "--batch",
        "3",
    ]));
    let got = ok(&node.cli(&["get", "items", r#"["r","p",1.0,"same"]"#]));
    assert_eq!(serde_json::from_str::<Value>(&got).expect("json")["n"], 19);
    // A string key column that looks like a number stays a string.
    let numeric = dir.path().join("numeric.csv");
    std::fs::write(
        &numeric,
        "store_id,product,score,item_id,available\n12345,bags,0.5,007,true\n",
    )
    .expect("write csv");
    ok(&node.cli(&["load", "items", numeric.to_str().expect("utf-8")]));
    assert!(ok(&node.cli(&["get", "items", r#"["12345","bags",0.5,"007"]"#])).contains("true"));

    let status = ok(&node.cli(&["status"]));
    assert!(
        status.contains("ready") && status.contains("8 partitions"),
        "{status}"
    );
    let list = ok(&node.cli(&["keyspace", "list"]));
    assert!(list.contains("\"items\""));
}

#[test]
fn bad_input_prints_one_clear_line_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&dir.path().join("data"));
    ok(&node.cli(&["keyspace", "create", "kv", "--key", "k:string,n:i64"]));
    let err = failed(&node.cli(&["put", "kv", r#"["a","not a number"]"#, "v"]));
    assert!(err.contains("`n`") && err.contains("integer"), "{err}");
    let err = failed(&node.cli(&["put", "nope", r#"["a"]"#, "v"]));
    assert!(err.contains("NOT_FOUND") && err.contains("`nope`"), "{err}");
    let err = failed(&node.cli(&[
        "scan", "kv", "--prefix", r#"["a"]"#, "--start", "[5]", "--end", "[1]",
    ]));
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("start is after end"),
        "{err}"
    );
    let err = failed(&node.cli(&["keyspace", "create", "bad", "--key", "k:float"]));
    assert!(err.contains("k:float"), "{err}");
    let err = failed(&node.cli(&["put", "kv", "not json", "v"]));
    assert!(err.contains("JSON array"), "{err}");
    let big = "x".repeat(5000);
    let err = failed(&node.cli(&["put", "kv", &format!(r#"["{big}",1]"#), "v"]));
    assert!(err.contains("max_key_bytes"), "{err}");
    let scan = ok(&node.cli(&["scan", "kv"]));
    assert!(scan.is_empty(), "nothing was written: {scan}");
}

#[test]
fn demo_once_answers_the_seed_questions() {
    let output = std::process::Command::new(BIN)
        .args([
            "demo",
            "--once",
            "--stores",
            "4",
            "--products",
            "3",
            "--items",
            "30",
            "--users",
            "30",
            "--events-per-user",
            "60",
        ])
        .arg("--grpc-addr")
        .arg(free_addr().to_string())
        .arg("--admin-addr")
        .arg(free_addr().to_string())
        .arg("--frame-addr")
        .arg(free_addr().to_string())
        .output()
        .expect("run demo");
    let stdout = ok(&output);
    assert_eq!(
        stdout.matches("Q1: the available items").count(),
        3,
        "{stdout}"
    );
    assert_eq!(stdout.matches("Q2: the items").count(), 3, "{stdout}");
    assert!(
        !stdout.contains("DIFFERENT"),
        "the handler and the scan agree: {stdout}"
    );
    assert!(stdout.contains("loaded and applied 2160 rows"), "{stdout}");
}

#[test]
fn cache_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&dir.path().join("data"));
    let created = ok(&node.cli(&[
        "cache",
        "create",
        "sessions",
        "--capacity-bytes",
        "1048576",
        "--ttl",
        "10m",
    ]));
    assert!(created.contains("created cache `sessions`"), "{created}");
    let token = ok(&node.cli(&["cache", "set", "sessions", "u1", "alice"]));
    assert!(token.trim().contains(':'), "a P:SEQ token: {token}");
    // The write is applied shortly after it is acknowledged.
    let got = wait_for_output(
        &node,
        &["cache", "get", "sessions", "u1", "u2"],
        "u1\thit\talice",
    );
    assert!(got.contains("u2\tmiss\t"), "{got}");
    let listed = ok(&node.cli(&["cache", "list"]));
    assert!(
        listed.starts_with("sessions\tcapacity 1048576 B\t1 entries"),
        "{listed}"
    );
    ok(&node.cli(&["cache", "del", "sessions", "u1"]));
    wait_for_output(&node, &["cache", "get", "sessions", "u1"], "u1\tmiss\t");
    let err = failed(&node.cli(&["cache", "set", "sessions", "k", "v", "--ttl", "9999d"]));
    assert!(err.contains("ttl_ms"), "{err}");
    let err = failed(&node.cli(&["cache", "get", "nope", "k"]));
    assert!(err.contains("cache `nope` does not exist"), "{err}");
    ok(&node.cli(&["cache", "drop", "sessions"]));
    assert_eq!(ok(&node.cli(&["cache", "list"])).trim(), "");
}

/// Runs the command until its output contains `wanted` (at most 5 s); returns the output.
fn wait_for_output(node: &Node, args: &[&str], wanted: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let out = ok(&node.cli(args));
        if out.contains(wanted) || std::time::Instant::now() > deadline {
            assert!(out.contains(wanted), "`{}` printed {out:?}", args.join(" "));
            return out;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `notadb txn`: the built-in procedures over a byte-valued keyspace, commit and abort.
#[test]
fn txn_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&dir.path().join("data"));
    let procedures = ok(&node.cli(&["txn", "procedures"]));
    assert!(
        procedures.lines().any(|l| l == "i64.transfer"),
        "{procedures}"
    );
    ok(&node.cli(&[
        "keyspace", "create", "accounts", "--key", "id:i64", "--value", "bytes",
    ]));
    let added = ok(&node.cli(&[
        "txn",
        "run",
        "i64.add",
        "--key",
        "accounts=[1]",
        "--key",
        "accounts=[2]",
        "--i64",
        "100,-5",
    ]));
    let added: serde_json::Value = serde_json::from_str(added.trim()).expect("JSON");
    assert_eq!(added["outcome"], "committed", "{added}");
    assert_eq!(added["output_i64"], serde_json::json!([100, -5]));
    assert!(!added["tokens"].as_array().expect("tokens").is_empty());
    let moved = ok(&node.cli(&[
        "txn",
        "run",
        "i64.transfer",
        "--key",
        "accounts=[1]:rw",
        "--key",
        "accounts=[3]:rw",
        "--i64",
        "30",
    ]));
    assert!(moved.contains(r#""output_i64":[70,30]"#), "{moved}");
    let sum = ok(&node.cli(&[
        "txn",
        "run",
        "i64.sum",
        "--key",
        "accounts=[1]:r",
        "--key",
        "accounts=[2]:r",
        "--key",
        "accounts=[3]:r",
    ]));
    assert!(sum.contains(r#""output_i64":[95]"#), "{sum}");
    let refused = node.cli(&[
        "txn",
        "run",
        "i64.transfer",
        "--key",
        "accounts=[2]",
        "--key",
        "accounts=[1]",
        "--i64",
        "1",
    ]);
    assert!(!refused.status.success());
    let out = String::from_utf8_lossy(&refused.stdout);
    assert!(out.contains("insufficient funds: -5 < 1"), "{out}");
    let err = failed(&node.cli(&["txn", "run", "nope", "--key", "accounts=[1]"]));
    assert!(err.contains("NOT_FOUND"), "{err}");
}
