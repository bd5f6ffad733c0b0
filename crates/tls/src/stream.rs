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
        let make_room = |buf: &mut bytes::BytesMut| {
            if buf.capacity() - buf.len() < room / 4 {
                buf.reserve(room);
            }
        };
        match self {
            ReadHalf::Plain(r) => loop {
                r.readable().await?;
                make_room(buf);
                match r.try_read_buf(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => return other,
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
