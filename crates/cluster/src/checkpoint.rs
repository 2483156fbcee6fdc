//! Checkpoints: a group's RocksDB state copied into [`Objects`] (the JetStream object store
//! `{name}_checkpoints`, or the directory `checkpoint_dir` on Kafka), with a manifest in the
//! metadata store (`checkpoint.{group}`) naming the files, their checksums and the applied
//! positions, so an empty replica restores the newest one and replays only the log tail.

use crate::control::{KvStore, Objects};
use crate::error::ClusterError;
use notadb_node::Node;
use notadb_record::now_micros;
use notadb_types::GroupId;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;
use xxhash_rust::xxh3::Xxh3;

/// One file of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointFile {
    /// The file's name in the RocksDB checkpoint directory.
    pub name: String,
    /// The file's size in bytes.
    pub bytes: u64,
    /// xxh3-64 of the file's bytes.
    pub xxh3: u64,
}

/// What a checkpoint holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Sortable id: creation time in Unix milliseconds, zero-padded, and the node.
    pub id: String,
    /// The shard group whose state the checkpoint holds.
    pub group: GroupId,
    /// The node that took it.
    pub node_id: String,
    /// Applied positions when the checkpoint was taken (the copy holds at least these).
    pub applied: Vec<(u16, u64)>,
    /// Keyspaces (name, id) the copy's catalog holds: its schema version.
    pub keyspaces: Vec<(String, u32)>,
    /// The files of the copy, sorted by name.
    pub files: Vec<CheckpointFile>,
}

impl Manifest {
    /// Total bytes of the checkpoint's files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// Refuses a manifest a restore must not follow: it is read from the metadata store,
    /// which anyone who can write there controls, and its id and file names become paths.
    /// Each must be one plain path component (no `/` or `\`, not `.` or `..`, not absolute,
    /// no NUL), the file names distinct, and the group the one asked for.
    pub fn check(&self, group: GroupId) -> Result<(), ClusterError> {
        let refuse = |what: String| {
            Err(ClusterError::Checkpoint(format!(
                "the checkpoint manifest of group {group} is refused: {what}"
            )))
        };
        if self.group != group {
            return refuse(format!("it names group {}", self.group));
        }
        if !plain_component(&self.id) {
            return refuse(format!("its id {:?} is not a plain name", self.id));
        }
        let mut names = std::collections::BTreeSet::new();
        for file in &self.files {
            if !plain_component(&file.name) {
                return refuse(format!("file name {:?} is not a plain name", file.name));
            }
            if !names.insert(file.name.as_str()) {
                return refuse(format!("file name {:?} appears twice", file.name));
            }
        }
        Ok(())
    }
}

/// Whether `name` is one ordinary path component: a file name, never a way out of the
/// directory it is joined to.
fn plain_component(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && matches!(
            Path::new(name).components().collect::<Vec<_>>()[..],
            [std::path::Component::Normal(_)]
        )
}

fn manifest_key(group: GroupId) -> String {
    format!("checkpoint.{group}")
}

fn object_name(group: GroupId, id: &str, file: &str) -> String {
    format!("g{group}/{id}/{file}")
}

fn io(what: String, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Checkpoint(format!("{what}: {e}"))
}

async fn file_hash(path: &Path) -> Result<(u64, u64), ClusterError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| io(format!("opening {}", path.display()), e))?;
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            return Ok((bytes, hasher.digest()));
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
}

/// Takes a checkpoint of `node` and stores it for `group`; deletes all but the newest `keep`.
pub(crate) async fn take(
    node: &Node,
    meta: &dyn KvStore,
    store: &dyn Objects,
    group: GroupId,
    keep: usize,
) -> Result<Manifest, ClusterError> {
    let status = node.status();
    let applied = status
        .partitions
        .iter()
        .map(|p| (p.partition.0, p.applied.0))
        .collect();
    let keyspaces = node
        .list_keyspaces()
        .iter()
        .map(|k| (k.def.schema.name.clone(), k.def.id.0))
        .collect();
    let millis = now_micros() / 1000;
    let id = format!("{millis:016}-{}", status.node_id);
    let dir = node.config().data_dir.join("checkpoints").join(&id);
    if let Some(parent) = dir.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| io(format!("creating {}", parent.display()), e))?;
    }
    let copy = node.clone();
    let target = dir.clone();
    tokio::task::spawn_blocking(move || copy.storage().checkpoint(&target))
        .await
        .map_err(|e| io("checkpoint task".into(), e))?
        .map_err(|e| io("creating the RocksDB checkpoint".into(), e))?;
    let result = upload(&dir, store, group, &id).await;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    let files = result?;
    let manifest = Manifest {
        id,
        group,
        node_id: status.node_id,
        applied,
        keyspaces,
        files,
    };
    meta.put(
        &manifest_key(group),
        serde_json::to_vec(&manifest).expect("serializable").into(),
    )
    .await?;
    prune(store, group, keep).await;
    Ok(manifest)
}

async fn upload(
    dir: &Path,
    store: &dyn Objects,
    group: GroupId,
    id: &str,
) -> Result<Vec<CheckpointFile>, ClusterError> {
    let mut names = Vec::new();
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(|e| io(format!("listing {}", dir.display()), e))?;
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(|e| io(format!("listing {}", dir.display()), e))?
    {
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    let mut files = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let (bytes, xxh3) = file_hash(&path).await?;
        store.put(&object_name(group, id, &name), &path).await?;
        files.push(CheckpointFile { name, bytes, xxh3 });
    }
    Ok(files)
}

/// Deletes the objects of all but the newest `keep` checkpoints of `group`.
async fn prune(store: &dyn Objects, group: GroupId, keep: usize) {
    let prefix = format!("g{group}/");
    let mut ids = std::collections::BTreeMap::<String, Vec<String>>::new();
    let Ok(list) = store.list(&prefix).await else {
        return;
    };
    for name in list {
        if let Some((id, _)) = name[prefix.len()..].split_once('/') {
            ids.entry(id.to_string()).or_default().push(name.clone());
        }
    }
    let old = ids.len().saturating_sub(keep.max(1));
    for (_, names) in ids.into_iter().take(old) {
        for name in names {
            if let Err(e) = store.delete(&name).await {
                tracing::warn!(object = name, error = %e, "could not delete an old checkpoint file");
            }
        }
    }
}

/// The newest checkpoint of `group`, if any.
pub(crate) async fn newest(
    meta: &dyn KvStore,
    group: GroupId,
) -> Result<Option<Manifest>, ClusterError> {
    let Some(entry) = meta.entry(&manifest_key(group)).await? else {
        return Ok(None);
    };
    let manifest: Manifest = serde_json::from_slice(&entry.value)
        .map_err(|e| io("the checkpoint manifest is unreadable".into(), e))?;
    manifest.check(group)?;
    Ok(Some(manifest))
}

/// Restores the newest checkpoint of `group` into `db_dir` when `db_dir` does not exist (an
/// empty replica). Files are checked against the manifest's sizes and checksums, written to a
/// scratch directory and renamed into place only when all are good.
pub(crate) async fn restore(
    meta: &dyn KvStore,
    store: &dyn Objects,
    group: GroupId,
    db_dir: &Path,
) -> Result<Option<Manifest>, ClusterError> {
    if tokio::fs::try_exists(db_dir).await.unwrap_or(true) {
        return Ok(None);
    }
    let Some(manifest) = newest(meta, group).await? else {
        return Ok(None);
    };
    let scratch = PathBuf::from(format!("{}.restore", db_dir.display()));
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    tokio::fs::create_dir_all(&scratch)
        .await
        .map_err(|e| io(format!("creating {}", scratch.display()), e))?;
    for file in &manifest.files {
        let name = object_name(group, &manifest.id, &file.name);
        let path = scratch.join(&file.name);
        store.get(&name, &path).await?;
        let (bytes, xxh3) = file_hash(&path).await?;
        if (bytes, xxh3) != (file.bytes, file.xxh3) {
            return Err(ClusterError::Checkpoint(format!(
                "checkpoint {} file {}: expected {} bytes with xxh3 {:016x}, found {bytes} bytes with xxh3 {xxh3:016x}",
                manifest.id, file.name, file.bytes, file.xxh3
            )));
        }
    }
    tokio::fs::rename(&scratch, db_dir).await.map_err(|e| {
        io(
            format!("moving the restored checkpoint to {}", db_dir.display()),
            e,
        )
    })?;
    Ok(Some(manifest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logkv::LogKv;
    use crate::objects::DirObjects;
    use notadb_log::{EmbeddedLog, EmbeddedLogOptions, Log};
    use std::sync::Arc;
    use std::time::Duration;

    fn manifest(id: &str, files: &[&str]) -> Manifest {
        Manifest {
            id: id.into(),
            group: GroupId(1),
            node_id: "n1".into(),
            applied: vec![(0, 3)],
            keyspaces: vec![],
            files: files
                .iter()
                .map(|name| CheckpointFile {
                    name: (*name).into(),
                    bytes: 1,
                    xxh3: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn only_plain_names_pass() {
        assert!(
            manifest("0001-n1", &["000012.sst", "CURRENT", "MANIFEST-000005"])
                .check(GroupId(1))
                .is_ok()
        );
        for bad in ["../x", "/etc/passwd", "a/b", "", ".", "..", "a\\b", "x\0"] {
            let err = manifest("0001-n1", &[bad])
                .check(GroupId(1))
                .expect_err(bad)
                .to_string();
            assert!(err.contains("not a plain name"), "{bad:?}: {err}");
        }
        for bad in ["..", "../0001", "g/0001"] {
            assert!(
                manifest(bad, &["CURRENT"]).check(GroupId(1)).is_err(),
                "{bad}"
            );
        }
        let twice = manifest("0001-n1", &["CURRENT", "CURRENT"]).check(GroupId(1));
        assert!(twice.expect_err("twice").to_string().contains("twice"));
        let other = manifest("0001-n1", &["CURRENT"]).check(GroupId(2));
        assert!(other
            .expect_err("group")
            .to_string()
            .contains("names group 1"));
    }

    #[tokio::test]
    async fn a_restore_refuses_a_manifest_that_leaves_its_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log: Arc<dyn Log> = Arc::new(
            EmbeddedLog::open(&dir.path().join("log"), 1, EmbeddedLogOptions::default())
                .expect("open the log"),
        );
        let meta = LogKv::open(log, "test", false, Duration::from_secs(10));
        let objects = DirObjects::open(&dir.path().join("objects")).expect("objects");
        let evil = manifest("0001-n1", &["../x"]);
        meta.put(
            &manifest_key(GroupId(1)),
            serde_json::to_vec(&evil).expect("json").into(),
        )
        .await
        .expect("put");
        let db = dir.path().join("node").join("db");
        let err = restore(&meta, &objects, GroupId(1), &db)
            .await
            .expect_err("refused");
        assert!(
            matches!(err, ClusterError::Checkpoint(ref m) if m.contains("\"../x\" is not a plain name")),
            "{err}"
        );
        assert!(!db.exists());
        assert!(!dir.path().join("node").join("x").exists());
        assert!(!dir.path().join("node").join("db.restore").exists());
    }
}
