//! The connection's read buffer: sized to what is being read, held only
//! while bytes are in flight.
//!
//! Invariants:
//! - An idle connection holds no read buffer: when the buffer is empty and
//!   the socket has nothing to read, the buffer is released and the task
//!   waits for readability without one ([`ReadReady`]); it is allocated
//!   again when bytes arrive. A busy connection keeps its buffer between
//!   reads.
//! - The buffer grows to the frame length of the packet being read (the
//!   codec checks the maximum from the fixed header first), or to the read
//!   hint, which doubles while reads fill the buffer (up to [`MAX_READ`])
//!   and halves back when they do not; a large empty buffer is released.
//! - [`Backing`] knows the size of the allocation the buffer reads into, so
//!   the codec copies small payloads out of it instead of slicing it
//!   (a slice keeps the whole allocation alive: review finding H6).

use std::future::{poll_fn, Future};
use std::io;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

use crate::protocol;
use crate::transport::Transport;

/// Smallest read.
pub(super) const MIN_READ: usize = 256;
/// Largest read for a busy connection streaming small packets.
pub(super) const MAX_READ: usize = 64 * 1024;

/// A stream that can say when it has bytes to read without being handed a
/// buffer, so an idle connection needs none.
pub trait ReadReady {
    /// `Ready` when a read would not wait (or when the stream cannot tell:
    /// then the caller reads with a buffer, as it would anyway).
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ReadReady for TcpStream {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

/// TLS and WebSocket streams buffer inside: they are read with a buffer.
impl ReadReady for Box<dyn Transport> {
    fn poll_read_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// In-memory pipes (tests) are read with a buffer.
impl ReadReady for tokio::io::DuplexStream {
    fn poll_read_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Reads what the socket has into `rbuf`; returns the bytes read and the
/// spare room the read had (for [`next_read_hint`]). Whenever the socket
/// has nothing to read and `rbuf` is empty, the buffer is released before
/// waiting. Cancel safe: a read that did not complete consumed nothing.
pub(super) async fn read_some<S>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    max_packet: u32,
    hint: usize,
) -> io::Result<(usize, usize)>
where
    S: AsyncRead + ReadReady + Unpin,
{
    poll_fn(|cx| {
        if stream.poll_read_ready(cx).is_pending() {
            release_if_empty(rbuf);
            return Poll::Pending;
        }
        prepare_read_buffer(rbuf, max_packet, hint);
        let spare = rbuf.capacity() - rbuf.len();
        // A fresh `read_buf` per poll: its waker stays registered with
        // the stream when it is pending, and dropping it consumes nothing.
        let read = std::pin::pin!(stream.read_buf(&mut *rbuf)).poll(cx);
        match read {
            Poll::Ready(r) => Poll::Ready(r.map(|n| (n, spare))),
            Poll::Pending => {
                release_if_empty(rbuf);
                Poll::Pending
            }
        }
    })
    .await
}

/// An idle connection holds no read buffer.
fn release_if_empty(rbuf: &mut BytesMut) {
    if rbuf.is_empty() && rbuf.capacity() > 0 {
        *rbuf = BytesMut::new();
    }
}

/// Makes room for the next read: the rest of a packet whose header is
/// known, else `hint` bytes; releases a large buffer once it is empty.
pub(super) fn prepare_read_buffer(rbuf: &mut BytesMut, max_packet: u32, hint: usize) {
    if rbuf.is_empty() && rbuf.capacity() > 2 * hint.max(MIN_READ) {
        *rbuf = BytesMut::new();
    }
    let want = match protocol::check_header(rbuf, max_packet) {
        Ok(Some(h)) => h.frame_len().saturating_sub(rbuf.len()).max(hint),
        _ => hint,
    };
    rbuf.reserve(want);
}

/// The allocation the read buffer reads into, for the codec's choice
/// between a zero-copy slice and a copy ([`protocol::decode_in_buffer`]).
/// Its end address stays put while packets are split off the front of the
/// buffer; a new end means a new allocation, whose size is then the
/// buffer's capacity (reserve copies what is left to its start).
#[derive(Debug, Default)]
pub(super) struct Backing {
    end: usize,
    size: usize,
}

impl Backing {
    /// The size of the allocation behind `rbuf` (at least its capacity).
    pub(super) fn size(&mut self, rbuf: &BytesMut) -> usize {
        let end = (rbuf.as_ptr() as usize).wrapping_add(rbuf.capacity());
        if end != self.end {
            self.end = end;
            self.size = rbuf.capacity();
        }
        self.size.max(rbuf.capacity())
    }
}

/// Adapts the read size: a read that filled the buffer means more is
/// waiting (grow, fewer system calls); small reads shrink it back.
pub(super) fn next_read_hint(hint: usize, read: usize, spare: usize) -> usize {
    if read >= spare {
        (hint * 2).min(MAX_READ)
    } else if read < hint / 4 {
        (hint / 2).max(MIN_READ)
    } else {
        hint
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The read-buffer policy: none when idle, sized to the packet being
    //! read, growing only while reads keep filling it.

    use bytes::Buf;
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[test]
    fn read_hint_grows_when_reads_fill_the_buffer_and_shrinks_back() {
        let mut hint = MIN_READ;
        for _ in 0..20 {
            hint = next_read_hint(hint, hint, hint);
        }
        assert_eq!(hint, MAX_READ);
        for _ in 0..20 {
            hint = next_read_hint(hint, 2, hint);
        }
        assert_eq!(hint, MIN_READ);
        assert_eq!(
            next_read_hint(1024, 600, 1024),
            1024,
            "steady reads keep the size"
        );
    }

    #[test]
    fn read_buffer_fits_the_packet_being_read() {
        let mut buf = BytesMut::new();
        prepare_read_buffer(&mut buf, 1 << 20, MIN_READ);
        assert!(buf.capacity() >= MIN_READ);
        // Fixed header of a PUBLISH with 10,000 bytes remaining.
        buf.extend_from_slice(&[0x30, 0x90, 0x4e]);
        prepare_read_buffer(&mut buf, 1 << 20, MIN_READ);
        assert!(buf.capacity() >= 10_003);
        // Consumed: a large empty buffer is released.
        buf.clear();
        prepare_read_buffer(&mut buf, 1 << 20, MIN_READ);
        assert!(buf.capacity() < 10_000);
    }

    #[test]
    fn backing_is_the_whole_allocation_while_packets_are_split_off() {
        let mut buf = BytesMut::with_capacity(4096);
        buf.extend_from_slice(&[0u8; 3000]);
        let mut backing = Backing::default();
        assert_eq!(backing.size(&buf), 4096);
        let first = buf.split_to(2000);
        assert_eq!(buf.capacity(), 2096);
        assert_eq!(backing.size(&buf), 4096, "same allocation");
        // The allocation is shared with `first`: a reserve moves to a new one.
        buf.reserve(8192);
        assert!(backing.size(&buf) >= 8192 + 1000);
        drop(first);
    }

    /// An idle TCP connection waits without a read buffer, and reads what
    /// arrives once the peer writes.
    #[tokio::test]
    async fn an_idle_socket_holds_no_read_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let mut rbuf = BytesMut::with_capacity(MIN_READ);
        let waiting = read_some(&mut server, &mut rbuf, 1 << 20, MIN_READ);
        let timed_out = tokio::time::timeout(std::time::Duration::from_millis(50), waiting).await;
        assert!(timed_out.is_err(), "nothing was sent");
        assert_eq!(rbuf.capacity(), 0, "an idle connection keeps its buffer");
        client.write_all(&[0xC0, 0x00]).await.unwrap();
        let (n, _) = read_some(&mut server, &mut rbuf, 1 << 20, MIN_READ)
            .await
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(rbuf.chunk(), &[0xC0, 0x00]);
    }
}
