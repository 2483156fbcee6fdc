//! [`DirObjects`]: checkpoint objects as files under one directory.

use crate::control::Objects;
use crate::error::ClusterError;
use std::path::{Component, Path, PathBuf};

/// Objects as files under a root directory: `g0/{id}/000012.sst` is `{root}/g0/{id}/000012.sst`.
/// Every replica of a group must reach the same directory (a network file system, or a local
/// directory when all nodes run on one machine). A put writes a temporary file, syncs it and
/// renames it into place, so a reader never sees half an object.
pub struct DirObjects {
    root: PathBuf,
}

impl DirObjects {
    /// Objects under `root`, created when missing.
    pub fn open(root: &Path) -> Result<DirObjects, ClusterError> {
        std::fs::create_dir_all(root).map_err(|e| io(format!("creating {}", root.display()), e))?;
        Ok(DirObjects {
            root: root.to_path_buf(),
        })
    }

    fn path(&self, name: &str) -> Result<PathBuf, ClusterError> {
        let relative = Path::new(name);
        let plain = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if name.is_empty() || !plain {
            return Err(ClusterError::Checkpoint(format!(
                "object name {name:?}: expected a relative path without `..`"
            )));
        }
        Ok(self.root.join(relative))
    }
}

fn io(what: String, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Checkpoint(format!("{what}: {e}"))
}

#[async_trait::async_trait]
impl Objects for DirObjects {
    async fn put(&self, name: &str, path: &Path) -> Result<(), ClusterError> {
        let target = self.path(name)?;
        let dir = target.parent().expect("an object path has a parent");
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| io(format!("creating {}", dir.display()), e))?;
        let scratch = target.with_extension("partial");
        tokio::fs::copy(path, &scratch).await.map_err(|e| {
            io(
                format!("copying {} to {}", path.display(), scratch.display()),
                e,
            )
        })?;
        let file = tokio::fs::File::open(&scratch)
            .await
            .map_err(|e| io(format!("opening {}", scratch.display()), e))?;
        file.sync_all()
            .await
            .map_err(|e| io(format!("syncing {}", scratch.display()), e))?;
        tokio::fs::rename(&scratch, &target)
            .await
            .map_err(|e| io(format!("renaming {}", scratch.display()), e))
    }

    async fn get(&self, name: &str, path: &Path) -> Result<(), ClusterError> {
        let source = self.path(name)?;
        tokio::fs::copy(&source, path).await.map_err(|e| {
            io(
                format!("copying {} to {}", source.display(), path.display()),
                e,
            )
        })?;
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| io(format!("opening {}", path.display()), e))?;
        file.sync_all()
            .await
            .map_err(|e| io(format!("syncing {}", path.display()), e))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, ClusterError> {
        let root = self.root.clone();
        let names = tokio::task::spawn_blocking(move || {
            let mut names = Vec::new();
            walk(&root, &root, &mut names)?;
            Ok::<_, std::io::Error>(names)
        })
        .await
        .map_err(|e| io("listing objects".into(), e))?
        .map_err(|e| io(format!("listing {}", self.root.display()), e))?;
        let mut names: Vec<String> = names
            .into_iter()
            .filter(|n| n.starts_with(prefix) && !n.ends_with(".partial"))
            .collect();
        names.sort();
        Ok(names)
    }

    async fn delete(&self, name: &str) -> Result<(), ClusterError> {
        let path = self.path(name)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(format!("deleting {}", path.display()), e)),
        }
        // Empty directories up to the root go too (a checkpoint's directory, once its last
        // file is deleted); a directory that is not empty stays.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || tokio::fs::remove_dir(d).await.is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

/// Appends the `/`-separated paths (relative to `root`) of every file under `dir`.
fn walk(root: &Path, dir: &Path, names: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(root, &path, names)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            let parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            names.push(parts.join("/"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_objects_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = DirObjects::open(&dir.path().join("objects")).expect("open");
        crate::conformance::objects(&objects, dir.path()).await;
    }

    #[tokio::test]
    async fn objects_round_trip_list_by_prefix_and_delete_their_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = DirObjects::open(&dir.path().join("objects")).expect("open");
        let source = dir.path().join("source");
        std::fs::write(&source, b"checkpoint bytes").expect("write");
        objects.put("g0/1/a.sst", &source).await.expect("put");
        objects.put("g0/1/b.sst", &source).await.expect("put");
        objects.put("g1/2/a.sst", &source).await.expect("put");
        assert_eq!(
            objects.list("g0/").await.expect("list"),
            ["g0/1/a.sst", "g0/1/b.sst"]
        );
        let copy = dir.path().join("copy");
        objects.get("g1/2/a.sst", &copy).await.expect("get");
        assert_eq!(std::fs::read(&copy).expect("read"), b"checkpoint bytes");
        objects.delete("g1/2/a.sst").await.expect("delete");
        objects.delete("g1/2/a.sst").await.expect("deleting twice");
        assert!(!dir.path().join("objects/g1").exists());
        assert!(objects.get("g1/2/a.sst", &copy).await.is_err());
        for bad in ["", "../escape", "/abs"] {
            assert!(
                objects.put(bad, &source).await.is_err(),
                "{bad:?} was accepted"
            );
        }
    }
}
