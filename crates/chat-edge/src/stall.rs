//! A connection whose writes fail once the peer has taken nothing for a
//! while. hyper bounds how long a request head may take to arrive but not
//! how long a response may wait for its reader: a peer that asks for a
//! large download and never reads would hold its connection, and its place
//! under the cap, for as long as TCP keeps the socket.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

pub(crate) struct WriteStall {
    stream: TcpStream,
    limit: Option<Duration>,
    /// Made at the first write that has to wait, then reset, so that a
    /// connection that waits often allocates once.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer counts the current wait: any progress ends it.
    waiting: bool,
}

impl WriteStall {
    pub(crate) fn new(stream: TcpStream, limit: Option<Duration>) -> Self {
        Self {
            stream,
            limit,
            timer: None,
            waiting: false,
        }
    }

    fn bounded<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let Some(limit) = self.limit else {
            return poll;
        };
        if poll.is_ready() {
            self.waiting = false;
            return poll;
        }
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if !self.waiting {
            timer.as_mut().reset(Instant::now() + limit);
            self.waiting = true;
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer took nothing within the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for WriteStall {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteStall {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.bounded(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.bounded(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_flush(cx);
        this.bounded(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.bounded(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair(limit: Option<Duration>) -> (WriteStall, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let peer = socket
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (served, _) = listener.accept().await.unwrap();
        (WriteStall::new(served, limit), peer)
    }

    /// Writes until one fails or `total` bytes went out.
    async fn write_all_of(stream: &mut WriteStall, total: usize) -> io::Result<()> {
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            sent += stream.write(&chunk).await?;
        }
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_reads_nothing_fails_the_write() {
        let (mut served, _peer) = pair(Some(Duration::from_secs(5))).await;
        let written = tokio::time::timeout(
            Duration::from_secs(3600),
            write_all_of(&mut served, 64 << 20),
        )
        .await
        .expect("the write should have failed, not waited");
        assert_eq!(written.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_slow_reader_is_not_cut_off() {
        let (mut served, mut peer) = pair(Some(Duration::from_millis(200))).await;
        let total = 256 * 1024;
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0;
            while got < total {
                // Slower than the writer, but never idle for the limit.
                tokio::time::sleep(Duration::from_millis(10)).await;
                got += peer.read(&mut buf).await.unwrap();
            }
            got
        });
        write_all_of(&mut served, total).await.unwrap();
        drop(served);
        assert!(reader.await.unwrap() >= total);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_limit_writes_wait() {
        let (mut served, _peer) = pair(None).await;
        let waited = tokio::time::timeout(
            Duration::from_secs(3600),
            write_all_of(&mut served, 64 << 20),
        )
        .await;
        assert!(waited.is_err(), "the write should still be waiting");
    }
}
