//! Writing a connection's batch of packets to its socket.
//!
//! Invariants: a batch is written piece by piece with the cancel-safe
//! `write`, so whatever event ends the connection midway, the bytes already
//! sent leave the buffer and the stream stays framed for the final flush;
//! the whole batch must go within `write_timeout_ms`; an eviction of the
//! session as a slow consumer interrupts the write too.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, watch};
use tokio::time::{sleep_until, Instant};

use crate::counters;

use super::{outbound, Conn, Exit};

/// What may interrupt a write batch.
pub(super) struct Events<'a> {
    pub kicked: &'a mut oneshot::Receiver<()>,
    pub shutdown: &'a mut watch::Receiver<bool>,
    pub mailbox: &'a crate::session::Mailbox,
    /// The keep alive deadline, if keep alive is on.
    pub deadline: Option<Instant>,
}

impl Conn {
    /// Writes the whole write buffer, piece by piece (`write` is cancel
    /// safe, `write_all` is not): when another event ends the connection
    /// midway, the bytes already sent are dropped from the buffer, so the
    /// final flush sends only the rest and the stream stays framed. The
    /// batch must go within write_timeout: a client that stops reading
    /// cannot hold its task forever (nor, with keep alive 0, ever be
    /// noticed otherwise). Returns why the connection ends, if it does.
    pub(super) async fn write_batch<S>(&mut self, stream: &mut S, ev: Events<'_>) -> Option<Exit>
    where
        S: AsyncWrite + Unpin,
    {
        let write_timeout = Duration::from_millis(self.broker.config.limits.write_timeout_ms);
        let write_deadline = Instant::now() + write_timeout;
        let keep_alive = ev.deadline.unwrap_or(write_deadline);
        let mut written = 0;
        let stopped = loop {
            if written == self.wbuf.len() {
                break None;
            }
            tokio::select! {
                r = stream.write(&self.wbuf[written..]) => match r {
                    Ok(0) | Err(_) => break Some(Exit::Closed),
                    Ok(n) => written += n,
                },
                _ = &mut *ev.kicked => break Some(Exit::TakenOver),
                _ = ev.shutdown.changed() => break Some(Exit::Shutdown),
                _ = ev.mailbox.evicted() => break Some(Exit::SlowConsumer),
                _ = sleep_until(keep_alive), if ev.deadline.is_some() => break Some(Exit::KeepAlive),
                _ = sleep_until(write_deadline) => break Some(Exit::WriteTimeout),
            }
        };
        counters::add(&self.broker.metrics.bytes_sent, written);
        if stopped.is_some() {
            self.wbuf.advance(written);
            return stopped;
        }
        self.wbuf.clear();
        // A busy connection keeps its write buffer between batches (up to a
        // bound); one with nothing more to send holds none.
        let idle = self.pending.is_empty() && self.retained.is_empty() && ev.mailbox.is_empty();
        if idle || self.wbuf.capacity() > 4 * outbound::WRITE_BATCH_BYTES {
            self.wbuf = BytesMut::new();
        }
        None
    }
}
