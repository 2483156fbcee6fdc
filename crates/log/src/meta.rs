//! The `LOG_META` file: the on-disk format version and the partition count of a log directory.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use crate::legacy;
use crate::segment::{sync_dir, with_path, WAL_DIR};
use crate::LogError;

/// Name of the metadata file in a log directory.
pub(crate) const META_FILE: &str = "LOG_META";

/// Name the metadata file is written under before it is atomically renamed into place.
const META_TEMP_FILE: &str = "LOG_META.tmp";

/// First line of the metadata file.
const META_MAGIC: &str = "notadb-log";

/// Version of the directory layout and record frame this code writes: segments shared by
/// every partition.
pub(crate) const FORMAT_VERSION: u32 = 2;

/// The first format, a directory of segments per partition, which opening converts.
pub(crate) const LEGACY_FORMAT: u32 = 1;

/// Checks the metadata of the log in `dir`, or writes it if the directory holds no log yet;
/// returns the log's format version.
pub(crate) fn open_or_create(dir: &Path, partitions: u16) -> Result<u32, LogError> {
    let path = dir.join(META_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => check(&path, &text, partitions),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            create(dir, partitions)?;
            Ok(FORMAT_VERSION)
        }
        Err(error) => Err(with_path(&path)(error).into()),
    }
}

fn check(path: &Path, text: &str, partitions: u16) -> Result<u32, LogError> {
    let corrupt = |expected: &str, found: &str| {
        LogError::Corrupt(format!(
            "{}: expected {expected}, found {found:?}",
            path.display()
        ))
    };
    let mut lines = text.lines();
    let magic = lines.next().unwrap_or_default();
    if magic != META_MAGIC {
        return Err(corrupt(&format!("the line {META_MAGIC:?}"), magic));
    }
    let version = field(&mut lines, "format").map_err(|line| corrupt("\"format <n>\"", line))?;
    let version = match u32::try_from(version) {
        Ok(v @ (LEGACY_FORMAT | FORMAT_VERSION)) => v,
        _ => {
            return Err(LogError::Corrupt(format!(
                "{}: expected format version {LEGACY_FORMAT} or {FORMAT_VERSION}, found version \
                 {version}",
                path.display()
            )))
        }
    };
    let found =
        field(&mut lines, "partitions").map_err(|line| corrupt("\"partitions <n>\"", line))?;
    let found = u16::try_from(found)
        .map_err(|_| corrupt("a partition count below 65536", &found.to_string()))?;
    if let Some(extra) = lines.find(|l| !l.trim().is_empty()) {
        return Err(corrupt("the end of the file", extra));
    }
    if found != partitions {
        return Err(LogError::PartitionCount {
            expected: partitions,
            found,
        });
    }
    Ok(version)
}

/// Parses the next line as `<name> <u64>`; on failure returns the line found.
fn field<'a>(lines: &mut std::str::Lines<'a>, name: &str) -> Result<u64, &'a str> {
    let line = lines.next().unwrap_or_default();
    line.strip_prefix(name)
        .and_then(|rest| rest.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .ok_or(line)
}

fn create(dir: &Path, partitions: u16) -> Result<(), LogError> {
    for entry in fs::read_dir(dir).map_err(with_path(dir))? {
        let name = entry.map_err(with_path(dir))?.file_name();
        let name = name.to_string_lossy();
        if name == WAL_DIR || legacy::is_partition_dir_name(&name) {
            return Err(LogError::Corrupt(format!(
                "{}: expected {META_FILE} beside the log directory {name:?}, found none",
                dir.display()
            )));
        }
    }
    write(dir, partitions)
}

/// Writes the metadata of a log of the current format with `partitions` partitions, replacing
/// any (atomically, by rename).
pub(crate) fn write(dir: &Path, partitions: u16) -> Result<(), LogError> {
    let temp = dir.join(META_TEMP_FILE);
    fs::File::create(&temp)
        .and_then(|mut file| {
            write!(
                file,
                "{META_MAGIC}\nformat {FORMAT_VERSION}\npartitions {partitions}\n"
            )?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temp, dir.join(META_FILE)))
        .map_err(with_path(&temp))?;
    sync_dir(dir)?;
    // The log directory itself may be new: make its entry durable too.
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_checks_the_partition_count() {
        let dir = tempfile::tempdir().expect("temp dir");
        open_or_create(dir.path(), 8).expect("create");
        open_or_create(dir.path(), 8).expect("reopen");
        match open_or_create(dir.path(), 4) {
            Err(LogError::PartitionCount {
                expected: 4,
                found: 8,
            }) => {}
            other => panic!("expected PartitionCount {{ 4, 8 }}, got {other:?}"),
        }
    }

    #[test]
    fn rejects_unknown_versions_and_garbage() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(META_FILE);
        for (text, needle) in [
            (
                "notadb-log\nformat 3\npartitions 8\n",
                "format version 1 or 2",
            ),
            ("something else\n", "notadb-log"),
            ("notadb-log\nformat x\npartitions 8\n", "format <n>"),
            ("notadb-log\nformat 1\npartitions 70000\n", "below 65536"),
            (
                "notadb-log\nformat 1\npartitions 8\nmore\n",
                "end of the file",
            ),
        ] {
            fs::write(&path, text).expect("write meta");
            let error = open_or_create(dir.path(), 8).expect_err(text);
            let message = error.to_string();
            assert!(
                matches!(error, LogError::Corrupt(_)) && message.contains(needle),
                "{text:?}: {message}"
            );
        }
    }

    #[test]
    fn refuses_partition_directories_without_metadata() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir(dir.path().join("p00000")).expect("mkdir");
        let error = open_or_create(dir.path(), 1).expect_err("no LOG_META");
        assert!(matches!(error, LogError::Corrupt(_)), "{error}");
    }
}
