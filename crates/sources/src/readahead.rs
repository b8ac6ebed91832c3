//! The read-ahead primitive of the sources that read on a thread of their own (SQLite steps
//! its query, Parquet decodes column chunks, PostgreSQL fetches from its cursor): one thread
//! fills batches a few ahead of the caller, over a bounded channel; the caller hands consumed
//! batches back to be refilled, so rows stop allocating once the first few batches are read.
//!
//! Every such source goes through [`ReadAhead`], so how the two threads talk — the bounded
//! channel, recycling, the end, a failure, a thread that stopped without saying why, waiting
//! for the thread at the end — is written once.

use std::io;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::{self, JoinHandle};

/// What the reading thread sends.
enum Sent<B, F> {
    Batch(B),
    /// Everything has been sent.
    End,
    /// Reading failed; nothing follows.
    Failed(F),
}

/// What [`ReadAhead::next`] hands out.
pub(crate) enum Next<B, F> {
    /// The next batch.
    Batch(B),
    /// Everything has been read; the thread has ended.
    End,
    /// Reading failed (what the thread sent); the thread has ended.
    Failed(F),
    /// The thread ended without saying it was done (it panicked): the model was not read to
    /// the end, and the source says so in its own words.
    Stopped,
}

/// The reading thread's side: batches to fill, and where to send them.
pub(crate) struct Feed<B, F> {
    tx: SyncSender<Sent<B, F>>,
    recycled: Receiver<B>,
}

impl<B: Default, F> Feed<B, F> {
    /// A batch to fill: one the caller handed back (to be cleared by the filler), or a new one.
    pub(crate) fn batch(&self) -> B {
        self.recycled.try_recv().unwrap_or_default()
    }

    /// Sends a filled batch, waiting while the caller is far enough behind; `false` when the
    /// caller is gone (the source was dropped): then the thread should stop.
    pub(crate) fn send(&self, batch: B) -> bool {
        self.tx.send(Sent::Batch(batch)).is_ok()
    }

    /// Says that everything has been sent.
    pub(crate) fn end(self) {
        let _ = self.tx.send(Sent::End);
    }

    /// Says that reading failed; nothing follows.
    pub(crate) fn fail(self, failure: F) {
        let _ = self.tx.send(Sent::Failed(failure));
    }
}

/// The caller's side: a thread reading batches ahead of it.
pub(crate) struct ReadAhead<B, F> {
    receiver: Receiver<Sent<B, F>>,
    recycle: Sender<B>,
    thread: Option<JoinHandle<()>>,
}

impl<B: Default + Send + 'static, F: Send + 'static> ReadAhead<B, F> {
    /// Starts the thread `name`, running `read`, which may be up to `in_flight` batches
    /// ahead of the caller.
    pub(crate) fn spawn(
        name: &str,
        in_flight: usize,
        read: impl FnOnce(Feed<B, F>) + Send + 'static,
    ) -> io::Result<Self> {
        let (tx, receiver) = mpsc::sync_channel(in_flight);
        let (recycle, recycled) = mpsc::channel();
        let thread = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || read(Feed { tx, recycled }))?;
        Ok(ReadAhead {
            receiver,
            recycle,
            thread: Some(thread),
        })
    }
}

impl<B, F> ReadAhead<B, F> {
    /// Hands a consumed batch back to be refilled (dropped if the thread has ended).
    pub(crate) fn recycle(&self, batch: B) {
        let _ = self.recycle.send(batch);
    }

    /// Waits for the next batch. After anything but [`Next::Batch`] the thread has ended
    /// (it is waited for), and every later call answers [`Next::End`].
    pub(crate) fn next(&mut self) -> Next<B, F> {
        if self.thread.is_none() {
            return Next::End;
        }
        let next = match self.receiver.recv() {
            Ok(Sent::Batch(batch)) => return Next::Batch(batch),
            Ok(Sent::End) => Next::End,
            Ok(Sent::Failed(failure)) => Next::Failed(failure),
            Err(_) => Next::Stopped,
        };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        next
    }

    /// Whether the thread may still be running (it has not reported the end or a failure).
    pub(crate) fn is_running(&self) -> bool {
        self.thread.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_then_the_end_then_the_end_again() {
        let mut ahead = ReadAhead::<Vec<u32>, String>::spawn("test", 1, |feed| {
            for i in 0..3 {
                let mut batch = feed.batch();
                batch.clear();
                batch.push(i);
                if !feed.send(batch) {
                    return;
                }
            }
            feed.end();
        })
        .unwrap();
        let mut seen = Vec::new();
        loop {
            match ahead.next() {
                Next::Batch(b) => {
                    seen.extend_from_slice(&b);
                    ahead.recycle(b);
                }
                Next::End => break,
                Next::Failed(_) | Next::Stopped => panic!("not expected"),
            }
        }
        assert_eq!(seen, [0, 1, 2]);
        assert!(!ahead.is_running());
        assert!(matches!(ahead.next(), Next::End));
    }

    #[test]
    fn a_failure_is_handed_out_once() {
        let mut ahead =
            ReadAhead::<Vec<u32>, String>::spawn("test", 1, |feed| feed.fail("broken".into()))
                .unwrap();
        assert!(matches!(ahead.next(), Next::Failed(f) if f == "broken"));
        assert!(matches!(ahead.next(), Next::End));
    }

    #[test]
    fn a_thread_that_panics_is_stopped_not_ended() {
        let mut ahead = ReadAhead::<Vec<u32>, String>::spawn("test", 1, |feed| {
            let _feed = feed;
            panic!("boom");
        })
        .unwrap();
        assert!(matches!(ahead.next(), Next::Stopped));
    }

    #[test]
    fn a_dropped_caller_stops_the_thread() {
        let (done_tx, done_rx) = mpsc::channel();
        let ahead = ReadAhead::<Vec<u32>, String>::spawn("test", 1, move |feed| {
            while feed.send(vec![1]) {}
            let _ = done_tx.send(());
        })
        .unwrap();
        drop(ahead);
        assert!(done_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .is_ok());
    }
}
