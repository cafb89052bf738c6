//! [`LinkProxy`]: a TCP forwarder for one direction of traffic between two nodes, which a test
//! can cut and heal to simulate a network partition.
//!
//! A "link" is everything one node sends to another: node A is configured to reach node B at the
//! proxy's address, so the connections A opens to B (A's raft messages and controller forwards,
//! and B's answers on them) pass through `proxy(A→B)`. B's own connections to A pass through the
//! separate `proxy(B→A)`. Cutting both isolates the pair; cutting one gives an asymmetric
//! partition.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A TCP proxy listening on `127.0.0.1:0` and forwarding every connection to one target.
///
/// While cut, it holds its port (so healing needs no reconfiguration of the nodes) but closes
/// every connection it accepts at once; cutting also closes the connections already open. A
/// sender therefore sees its peer as unreachable, as after a crash or a partition, and
/// reconnects by itself once the link is healed.
///
/// The proxy's tasks run on the runtime that called [`LinkProxy::start`]; dropping the proxy
/// closes its connections and stops accepting.
pub struct LinkProxy {
    addr: SocketAddr,
    target: SocketAddr,
    cut: watch::Sender<bool>,
    muted: watch::Sender<bool>,
    /// Added to every chunk forwarded, either way.
    delay: watch::Sender<Duration>,
    /// Bumped to close the connections open at that moment.
    resets: watch::Sender<u64>,
    refused: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    acceptor: JoinHandle<()>,
}

impl LinkProxy {
    /// Starts forwarding `127.0.0.1:<some free port>` to `target`; the link starts healed.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let (cut, _) = watch::channel(false);
        let (muted, _) = watch::channel(false);
        let (delay, _) = watch::channel(Duration::ZERO);
        let (resets, _) = watch::channel(0);
        let refused = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let acceptor = tokio::spawn(accept_loop(
            listener,
            target,
            Links {
                cut: cut.clone(),
                muted: muted.clone(),
                delay: delay.clone(),
                resets: resets.clone(),
                sent: sent.clone(),
            },
            refused.clone(),
        ));
        Ok(Self {
            addr,
            target,
            cut,
            muted,
            delay,
            resets,
            refused,
            sent,
            acceptor,
        })
    }

    /// The address senders connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Closes every open connection and refuses (accepts and closes) new ones until
    /// [`LinkProxy::heal`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Forwards new connections again.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }

    /// Swallows the target's answers: what the sender sends still arrives, what comes back is
    /// read and dropped, so the sender waits for answers that never come (a request carried out
    /// whose acknowledgement is lost). The bytes lost leave the connections unusable: cut them
    /// before [`LinkProxy::unmute`].
    pub fn mute(&self) {
        self.muted.send_replace(true);
    }

    /// Delays every chunk of bytes forwarded, either way, by `delay` (zero: no delay), on open
    /// connections too: a slow link.
    pub fn slow(&self, delay: Duration) {
        self.delay.send_replace(delay);
    }

    /// Lets answers through again, on connections opened from now on.
    pub fn unmute(&self) {
        self.muted.send_replace(false);
    }

    /// Closes every connection open now; new ones are forwarded as before. The sender sees
    /// its connection break, as when a peer restarts.
    pub fn reset_connections(&self) {
        self.resets.send_modify(|n| *n += 1);
    }

    /// Whether the link is cut.
    pub fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }

    /// How many connections were refused (accepted and closed) because the link was cut: a
    /// sign that the sender tried to reach its peer meanwhile.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Bytes forwarded from the sender to the target so far (its requests; not the answers).
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.cut.send_replace(true);
        self.acceptor.abort();
    }
}

/// The switches every forwarded connection watches.
struct Links {
    cut: watch::Sender<bool>,
    muted: watch::Sender<bool>,
    delay: watch::Sender<Duration>,
    resets: watch::Sender<u64>,
    /// Bytes forwarded from senders to the target.
    sent: Arc<AtomicU64>,
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    links: Links,
    refused: Arc<AtomicU64>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            // Out of file descriptors or similar: keep the port, try again.
            tokio::task::yield_now().await;
            continue;
        };
        if *links.cut.borrow() {
            refused.fetch_add(1, Ordering::Relaxed);
            drop(inbound);
            continue;
        }
        tokio::spawn(forward(
            inbound,
            target,
            links.cut.subscribe(),
            links.muted.subscribe(),
            links.delay.subscribe(),
            links.resets.subscribe(),
            links.sent.clone(),
        ));
    }
}

/// Pumps bytes both ways until either side closes or the link is cut; while muted, the
/// target's bytes are dropped.
async fn forward(
    mut inbound: TcpStream,
    target: SocketAddr,
    mut cut: watch::Receiver<bool>,
    muted: watch::Receiver<bool>,
    delay: watch::Receiver<Duration>,
    mut resets: watch::Receiver<u64>,
    sent: Arc<AtomicU64>,
) {
    let pump = async {
        // The target being down (a killed node) looks to the sender like a closed connection.
        let Ok(mut outbound) = TcpStream::connect(target).await else {
            return;
        };
        let _ = inbound.set_nodelay(true);
        let _ = outbound.set_nodelay(true);
        let (mut from_sender, mut to_sender) = inbound.split();
        let (mut from_target, mut to_target) = outbound.split();
        let never = watch::channel(false).1;
        let up = pump_one_way(
            &mut from_sender,
            &mut to_target,
            &delay,
            &never,
            Some(&sent),
        );
        let down = pump_one_way(&mut from_target, &mut to_sender, &delay, &muted, None);
        tokio::select! {
            _ = up => {}
            _ = down => {}
        }
    };
    // `wait_for` sees a cut that happened before this task started, too; `changed` sees only
    // resets after the connection was accepted.
    tokio::select! {
        _ = pump => {}
        _ = cut.wait_for(|cut| *cut) => {}
        _ = resets.changed() => {}
    }
}

/// Copies bytes from `from` to `to` until `from` closes, each chunk after the link's current
/// delay; while `dropped` is set, chunks are read and discarded instead. Counts the bytes
/// forwarded in `counted`, if given.
async fn pump_one_way(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    delay: &watch::Receiver<Duration>,
    dropped: &watch::Receiver<bool>,
    counted: Option<&AtomicU64>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let wait = *delay.borrow();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        if !*dropped.borrow() {
            to.write_all(&buf[..n]).await?;
            if let Some(counted) = counted {
                counted.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server: writes back whatever it reads.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(message).await?;
        let mut answer = vec![0; message.len()];
        stream.read_exact(&mut answer).await?;
        Ok(answer)
    }

    #[tokio::test]
    async fn forwards_until_cut_and_again_after_heal() {
        let proxy = LinkProxy::start(echo_server().await).await.expect("proxy");
        let mut open = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(round_trip(&mut open, b"ping").await.expect("echo"), b"ping");

        proxy.cut();
        assert!(proxy.is_cut());
        // The open connection is closed: reading sees end of stream or a reset.
        let mut buf = [0u8; 1];
        assert!(matches!(open.read(&mut buf).await, Ok(0) | Err(_)));
        // A new one is accepted and closed without reaching the target.
        let mut refused = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert!(round_trip(&mut refused, b"lost").await.is_err());
        assert_eq!(proxy.refused(), 1);

        proxy.heal();
        let mut healed = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(
            round_trip(&mut healed, b"back").await.expect("echo"),
            b"back"
        );
    }

    #[tokio::test]
    async fn a_slowed_link_still_delivers_everything_in_order() {
        let proxy = LinkProxy::start(echo_server().await).await.expect("proxy");
        let mut open = TcpStream::connect(proxy.addr()).await.expect("connect");
        proxy.slow(Duration::from_millis(5));
        for message in [&b"one"[..], b"two", b"three"] {
            assert_eq!(round_trip(&mut open, message).await.expect("echo"), message);
        }
        proxy.slow(Duration::ZERO);
        assert_eq!(round_trip(&mut open, b"fast").await.expect("echo"), b"fast");
    }

    #[tokio::test]
    async fn a_muted_link_delivers_but_swallows_the_answers() {
        // Answers "pong" to whatever arrives, then closes; reports what arrived.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = listener.local_addr().expect("addr");
        let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 4];
                if s.read_exact(&mut buf).await.is_ok() {
                    let _ = arrived_tx.send(buf);
                    let _ = s.write_all(b"pong").await;
                }
            }
        });
        let proxy = LinkProxy::start(target).await.expect("proxy");
        proxy.mute();
        let mut muted = TcpStream::connect(proxy.addr()).await.expect("connect");
        muted.write_all(b"ping").await.expect("write");
        assert_eq!(
            arrived.recv().await,
            Some(*b"ping"),
            "requests still arrive"
        );
        let mut answer = Vec::new();
        let _ = muted.read_to_end(&mut answer).await;
        assert!(answer.is_empty(), "the answer was swallowed: {answer:?}");

        proxy.unmute();
        let mut open = TcpStream::connect(proxy.addr()).await.expect("connect");
        open.write_all(b"ping").await.expect("write");
        assert_eq!(arrived.recv().await, Some(*b"ping"));
        let mut answer = Vec::new();
        let _ = open.read_to_end(&mut answer).await;
        assert_eq!(answer, b"pong");
    }
}
