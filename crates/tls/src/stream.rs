//! [`Stream`]: a connection that is either plain TCP or TLS over TCP.
//!
//! Writers must `flush()` after writing: rustls may keep encrypted bytes
//! buffered when the socket would block, and only a flush (or the next
//! write) pushes them out. For plain TCP a flush does nothing.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

/// Plain TCP, or TLS (client or server side) over TCP.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP: no extra cost over a `TcpStream`.
    Plain(TcpStream),
    /// TLS; boxed because rustls's connection state is large and the plain
    /// variant should not carry its size.
    Tls(Box<TlsStream<TcpStream>>),
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Self {
        Stream::Plain(s)
    }
}

impl Stream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether this connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Local address of the socket.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    /// Peer address of the socket.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// Splits into a read half and a write half that can move to
    /// different tasks. Plain TCP splits without a lock; TLS shares one
    /// rustls state between the halves, locked only inside each poll (as
    /// tokio's `split` does, but keeping the socket reachable for
    /// [`ReadHalf::peek`]).
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Plain(r), WriteHalf::Plain(w))
            }
            Stream::Tls(s) => {
                let shared = Arc::new(Mutex::new(*s));
                (ReadHalf::Tls(shared.clone()), WriteHalf::Tls(shared))
            }
        }
    }
}

type Shared = Arc<Mutex<TlsStream<TcpStream>>>;

/// The lock is held only for one poll, which cannot panic half-way in a
/// way that matters more than the connection itself: take it even if a
/// panic poisoned it.
fn lock(s: &Shared) -> MutexGuard<'_, TlsStream<TcpStream>> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// The halves given to [`ReadHalf::reunite`] came from different streams.
#[derive(Debug, thiserror::Error)]
#[error("the halves are not of the same stream")]
pub struct ReuniteError;

/// The reading half of a [`Stream`].
#[derive(Debug)]
pub enum ReadHalf {
    /// Plain TCP.
    Plain(OwnedReadHalf),
    /// TLS.
    Tls(Shared),
}

/// The writing half of a [`Stream`].
#[derive(Debug)]
pub enum WriteHalf {
    /// Plain TCP.
    Plain(OwnedWriteHalf),
    /// TLS.
    Tls(Shared),
}

impl WriteHalf {
    /// Writes what the socket takes at once, without waiting: how many
    /// bytes (0 when it takes none now, and always for TLS, whose records
    /// are written by [`send`]). A caller whose buffer all goes out this way
    /// needs no write timer.
    pub fn try_write_now(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            WriteHalf::Plain(w) => match w.try_write(buf) {
                Ok(n) => Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                Err(e) => Err(e),
            },
            WriteHalf::Tls(_) => Ok(0),
        }
    }

    /// Writes and flushes all of `buf` within `limit`: what the socket
    /// takes at once goes without a timer (arming and clearing one is most
    /// of an unpipelined write's cost), only the rest waits under `limit`.
    pub async fn send_within(&mut self, buf: &[u8], limit: Duration) -> Result<(), SendError> {
        let sent = self.try_write_now(buf).map_err(SendError::Failed)?;
        let rest = &buf[sent..];
        if rest.is_empty() {
            return Ok(());
        }
        match tokio::time::timeout(limit, send(self, rest)).await {
            Ok(r) => r.map_err(SendError::Failed),
            Err(_) => Err(SendError::TimedOut),
        }
    }
}

/// Why [`WriteHalf::send_within`] did not write everything.
#[derive(Debug)]
pub enum SendError {
    /// The connection failed.
    Failed(io::Error),
    /// The peer took none of it within the limit.
    TimedOut,
}

impl ReadHalf {
    /// Puts the halves of one stream back together.
    pub fn reunite(self, w: WriteHalf) -> Result<Stream, ReuniteError> {
        match (self, w) {
            (ReadHalf::Plain(r), WriteHalf::Plain(w)) => {
                r.reunite(w).map(Stream::Plain).map_err(|_| ReuniteError)
            }
            (ReadHalf::Tls(r), WriteHalf::Tls(w)) if Arc::ptr_eq(&r, &w) => {
                drop(w);
                let m = Arc::try_unwrap(r).map_err(|_| ReuniteError)?;
                let s = m.into_inner().unwrap_or_else(|p| p.into_inner());
                Ok(Stream::Tls(Box::new(s)))
            }
            _ => Err(ReuniteError),
        }
    }

    /// Reads what the peer sent into `buf`, giving it `room` bytes of
    /// space only once there is something to read (plain TCP): a
    /// connection that sits idle holds no read buffer. `Ok(0)`: the peer
    /// closed. Cancel-safe: nothing is read until the socket is readable.
    pub async fn read_into(&mut self, buf: &mut bytes::BytesMut, room: usize) -> io::Result<usize> {
        // Less room than a quarter of `room` left: more is made.
        let make_room = |buf: &mut bytes::BytesMut| {
            if buf.capacity() - buf.len() >= room / 4 {
                return;
            }
            if buf.capacity() == 0 {
                if let Some(lent) = crate::read_buffers::lend(room / 4) {
                    *buf = lent;
                    return;
                }
            }
            buf.reserve(room);
        };
        match self {
            ReadHalf::Plain(r) => loop {
                r.readable().await?;
                make_room(buf);
                let room = buf.capacity() - buf.len();
                let mut got = None;
                // A read that returns less than it had room for emptied
                // the socket: readiness is cleared at once (as of before
                // the read, so bytes arriving since wake us again), saving
                // the second read that would only have answered EAGAIN: one
                // system call per client request in three.
                let tried = r.as_ref().try_io(tokio::io::Interest::READABLE, || {
                    let n = r.try_read_buf(buf)?;
                    got = Some(n);
                    if n > 0 && n < room {
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    Ok(n)
                });
                match (tried, got) {
                    (_, Some(n)) => return Ok(n),
                    (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    (other, None) => return other,
                }
            },
            ReadHalf::Tls(_) => {
                make_room(buf);
                tokio::io::AsyncReadExt::read_buf(self, buf).await
            }
        }
    }

    /// Waits until the socket has bytes or is closed, without taking
    /// them: `Ok(0)` means the peer closed. For TLS this looks at the
    /// encrypted bytes on the socket, which is enough to tell that a
    /// client left.
    pub async fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ReadHalf::Plain(r) => r.peek(buf).await,
            ReadHalf::Tls(s) => {
                std::future::poll_fn(|cx| {
                    let g = lock(s);
                    let mut rb = ReadBuf::new(buf);
                    match g.get_ref().0.poll_peek(cx, &mut rb) {
                        Poll::Ready(Ok(n)) => Poll::Ready(Ok(n)),
                        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                        Poll::Pending => Poll::Pending,
                    }
                })
                .await
            }
        }
    }
}

macro_rules! delegate_read {
    ($t:ty, $tls:ident => $inner:expr) => {
        impl AsyncRead for $t {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
                    Self::Tls($tls) => Pin::new($inner).poll_read(cx, buf),
                }
            }
        }
    };
}

macro_rules! delegate_write {
    ($t:ty, $tls:ident => $inner:expr) => {
        impl AsyncWrite for $t {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
                    Self::Tls($tls) => Pin::new($inner).poll_write(cx, buf),
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                    Self::Tls($tls) => Pin::new($inner).poll_write_vectored(cx, bufs),
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    Self::Plain(s) => s.is_write_vectored(),
                    // Gathering into TLS records gains little; keep it simple.
                    Self::Tls(_) => false,
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_flush(cx),
                    Self::Tls($tls) => Pin::new($inner).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Tls($tls) => Pin::new($inner).poll_shutdown(cx),
                }
            }
        }
    };
}

delegate_read!(Stream, s => &mut **s);
delegate_read!(ReadHalf, s => &mut *lock(s));
delegate_write!(Stream, s => &mut **s);
delegate_write!(WriteHalf, s => &mut *lock(s));

/// Writes all of `buf` and flushes: what a writer written for plain TCP
/// needs to stay correct over TLS (a flush of plain TCP does nothing).
pub async fn send<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, buf: &[u8]) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    w.write_all(buf).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (ReadHalf, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (Stream::Plain(server).into_split().0, client)
    }

    #[tokio::test(start_paused = true)]
    async fn send_within_writes_what_is_read_and_gives_up_on_a_peer_that_reads_nothing() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        let (_rd, mut wr) = Stream::Plain(server).into_split();
        // Small: the socket takes it at once.
        wr.send_within(b"+OK\r\n", Duration::from_secs(5))
            .await
            .unwrap();
        let mut got = [0u8; 5];
        tokio::io::AsyncReadExt::read_exact(&mut peer, &mut got)
            .await
            .unwrap();
        assert_eq!(&got, b"+OK\r\n");
        // Far more than the socket buffers hold, and nobody reads it.
        let big = vec![b'x'; 64 << 20];
        match wr.send_within(&big, Duration::from_millis(200)).await {
            Err(SendError::TimedOut) => {}
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    async fn read(r: &mut ReadHalf, buf: &mut bytes::BytesMut) -> usize {
        tokio::time::timeout(Duration::from_secs(5), r.read_into(buf, 64))
            .await
            .expect("read_into woke for the bytes sent")
            .unwrap()
    }

    /// A read that empties the socket clears its readiness without a
    /// second system call: what arrives afterwards must still wake the
    /// reader, whether it comes while the reader waits or before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_after_a_draining_read_wake_the_reader() {
        let (mut r, mut w) = pair().await;
        let mut buf = bytes::BytesMut::new();
        for round in 0..200u32 {
            let msg = format!("PING {round}\r\n");
            if round % 2 == 0 {
                // Sent before the reader waits.
                w.write_all(msg.as_bytes()).await.unwrap();
                assert_eq!(read(&mut r, &mut buf).await, msg.len());
            } else {
                // Sent while it waits.
                let sender = async {
                    tokio::task::yield_now().await;
                    w.write_all(msg.as_bytes()).await.unwrap();
                };
                let (n, ()) = tokio::join!(read(&mut r, &mut buf), sender);
                assert_eq!(n, msg.len());
            }
            assert_eq!(&buf[..], msg.as_bytes());
            buf.clear();
        }
        // More than the room given: read in pieces, nothing lost.
        let big = vec![b'x'; 1000];
        w.write_all(&big).await.unwrap();
        let mut total = 0;
        while total < big.len() {
            total += read(&mut r, &mut buf).await;
        }
        assert_eq!(buf.len(), big.len());
        drop(w);
        assert_eq!(read(&mut r, &mut buf).await, 0, "the peer closed");
    }
}
