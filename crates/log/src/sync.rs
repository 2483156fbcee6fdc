//! [`SyncPool`]: syncs many files at once.
//!
//! Concurrent `fdatasync`s on one file system share journal commits and device cache flushes,
//! so syncing the active files of many partitions in parallel costs a few single syncs rather
//! than one per file. With one writer and many partitions this is what keeps
//! [`FsyncPolicy::Always`](crate::FsyncPolicy::Always) group commit from degrading into one
//! sync per partition in turn.

use std::fs::File;
use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

/// Most threads syncing files at the same time; started on demand.
pub(crate) const SYNC_THREADS: usize = 16;

/// A file to sync and where to report the outcome.
type Job = (Arc<File>, Sender<io::Result<()>>);

/// Threads that `fdatasync` files handed to them; owned by the writer thread.
pub(crate) struct SyncPool {
    jobs: Option<Sender<Job>>,
    queue: Arc<Mutex<Receiver<Job>>>,
    threads: Vec<JoinHandle<()>>,
}

impl SyncPool {
    /// A pool with no thread yet.
    pub fn new() -> SyncPool {
        let (jobs, queue) = mpsc::channel();
        SyncPool {
            jobs: Some(jobs),
            queue: Arc::new(Mutex::new(queue)),
            threads: Vec::new(),
        }
    }

    /// Syncs the data of every file in `files` (one alone on the calling thread, several in
    /// parallel) and returns the first error, after every sync has finished.
    pub fn sync_data(&mut self, files: Vec<Arc<File>>) -> io::Result<()> {
        match files.len() {
            0 => return Ok(()),
            1 => return files[0].sync_data(),
            _ => {}
        }
        self.start_threads(files.len().min(SYNC_THREADS))?;
        let jobs = self
            .jobs
            .as_ref()
            .expect("the job sender is only taken when the pool drops");
        let expected = files.len();
        let (report, outcomes) = mpsc::channel();
        for file in files {
            jobs.send((file, report.clone()))
                .map_err(|_| io::Error::other("the log's sync threads are gone"))?;
        }
        drop(report);
        let mut received = 0;
        let mut result = Ok(());
        for outcome in outcomes {
            received += 1;
            if let (Err(error), Ok(())) = (outcome, &result) {
                result = Err(error);
            }
        }
        if received < expected && result.is_ok() {
            result = Err(io::Error::other("a sync thread of the log stopped"));
        }
        result
    }

    /// Makes sure at least `count` threads run.
    fn start_threads(&mut self, count: usize) -> io::Result<()> {
        while self.threads.len() < count {
            let queue = self.queue.clone();
            let thread = thread::Builder::new()
                .name("notadb-log-sync".to_string())
                .spawn(move || serve(&queue))?;
            self.threads.push(thread);
        }
        Ok(())
    }
}

/// Syncs queued files until the pool drops.
fn serve(queue: &Mutex<Receiver<Job>>) {
    loop {
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok((file, report)) = job else {
            return;
        };
        let _ = report.send(file.sync_data());
    }
}

impl Drop for SyncPool {
    fn drop(&mut self) {
        drop(self.jobs.take());
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a log sync thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_any_number_of_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files: Vec<Arc<File>> = (0..40)
            .map(|i| Arc::new(File::create(dir.path().join(i.to_string())).expect("create")))
            .collect();
        let mut pool = SyncPool::new();
        for count in [0, 1, 2, 40] {
            pool.sync_data(files[..count].to_vec()).expect("sync");
        }
        assert_eq!(pool.threads.len(), SYNC_THREADS);
    }
}
