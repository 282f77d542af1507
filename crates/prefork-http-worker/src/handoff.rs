//! The listener's hand-off queue: parked connections passed from one worker process to any
//! idle one, socket and received bytes together.
//!
//! A `SOCK_SEQPACKET` socket pair, made with the listening socket in the parent and inherited
//! by every worker: a worker sends on one end (`SCM_RIGHTS` carries the socket, the message
//! carries the bytes already read and the deadlines), any worker receives from the other. Each
//! idle worker waits on the receiving end with `EPOLLEXCLUSIVE`, as on the listener, so one
//! idle worker wakes per connection passed. Messages keep their boundaries, so several
//! senders and receivers never mix two connections. A connection in the queue is owned by
//! the kernel until a worker takes it; if the whole server exits first, the kernel closes it.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg, sendmsg, setsockopt,
    socketpair, sockopt,
};

use crate::parked::{MAX_PARKED_BYTES, ParkKind, ParkedConnection};
use crate::transport::Peer;

const MAGIC: [u8; 4] = *b"SHPH";
const VERSION: u8 = 2;
/// Bytes of a message before the connection's buffered bytes.
const HEADER_BYTES: usize = 72;
/// The largest message: a parked connection's bytes and the header.
pub(crate) const MAX_MESSAGE_BYTES: usize = HEADER_BYTES + MAX_PARKED_BYTES + 16 * 1024;

/// The two ends of the queue.
#[derive(Debug)]
pub struct HandoffQueue {
    sender: OwnedFd,
    receiver: OwnedFd,
}

/// Why a connection could not be passed on.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The queue is full: keep the connection and try again when it drains (boxed: the
    /// common result, `Ok`, stays small).
    Full(Box<ParkedConnection>),
    /// The queue is broken (it should not be); the connection is closed.
    Failed(Errno),
}

impl HandoffQueue {
    /// A new queue (non-blocking, close-on-exec). Made in the parent, before any fork.
    pub fn new() -> io::Result<HandoffQueue> {
        let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
        let (sender, receiver) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, flags)?;
        // Room for many connections in flight (the kernel caps it at net.core.wmem_max); a
        // message must fit whole.
        let _ = setsockopt(&sender, sockopt::SndBuf, &(4 << 20));
        let _ = setsockopt(&receiver, sockopt::RcvBuf, &(4 << 20));
        Ok(HandoffQueue { sender, receiver })
    }

    /// The end idle workers wait on.
    /// The queue an earlier server made (a binary upgrade hands both ends over): its
    /// connections in flight and the ones passed later reach this server's workers too.
    pub fn from_fds(sender: OwnedFd, receiver: OwnedFd) -> io::Result<HandoffQueue> {
        for fd in [&sender, &receiver] {
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))?;
        }
        Ok(HandoffQueue { sender, receiver })
    }

    /// Both ends (sender, receiver), to hand them to a successor.
    pub fn fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.sender.as_fd(), self.receiver.as_fd()]
    }

    pub(crate) fn receiver(&self) -> BorrowedFd<'_> {
        self.receiver.as_fd()
    }

    /// The end senders wait on (writable once the queue has room again).
    pub(crate) fn sender(&self) -> BorrowedFd<'_> {
        self.sender.as_fd()
    }

    /// Passes `conn` to whichever worker takes it next. On success this process's copy of
    /// the socket is closed (the queue holds it).
    pub(crate) fn send(&self, conn: ParkedConnection) -> Result<(), SendError> {
        let header = encode_header(&conn);
        let iov = [IoSlice::new(&header), IoSlice::new(&conn.buffered)];
        let fds = [conn.fd.as_raw_fd()];
        let control = [ControlMessage::ScmRights(&fds)];
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        match sendmsg::<()>(self.sender.as_raw_fd(), &iov, &control, flags, None) {
            Ok(_) => Ok(()),
            Err(Errno::EAGAIN | Errno::ENOBUFS | Errno::ENOMEM) => Err(SendError::Full(Box::new(conn))),
            Err(Errno::EINTR) => self.send(conn),
            Err(errno) => Err(SendError::Failed(errno)),
        }
    }

    /// Takes one connection, if any is waiting (its deadlines go by the times it carries).
    /// `buffer` must hold [`MAX_MESSAGE_BYTES`].
    pub(crate) fn receive(&self, buffer: &mut [u8]) -> io::Result<Option<ParkedConnection>> {
        loop {
            let mut control = nix::cmsg_space!([std::os::fd::RawFd; 1]);
            let mut iov = [IoSliceMut::new(buffer)];
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
            let message = match recvmsg::<()>(self.receiver.as_raw_fd(), &mut iov, Some(&mut control), flags) {
                Ok(message) => message,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(Errno::EINTR) => continue,
                Err(errno) => return Err(errno.into()),
            };
            let (bytes, truncated) =
                (message.bytes, message.flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC));
            if message.flags.contains(MsgFlags::MSG_CTRUNC) {
                // No descriptor was free to take the socket: the kernel closed it.
                tracing::error!("a connection handed over was lost: no descriptor free to take it");
                return Err(io::Error::from_raw_os_error(libc::EMFILE));
            }
            let mut fd = None;
            for cmsg in message.cmsgs()? {
                if let ControlMessageOwned::ScmRights(received) = cmsg {
                    for raw in received {
                        // SAFETY: the kernel installed this descriptor for us; nothing else
                        // owns it.
                        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                        fd.get_or_insert(owned);
                    }
                }
            }
            let Some(fd) = fd else { continue };
            if truncated {
                tracing::error!(bytes, "a connection handed over did not fit its message; closing it");
                continue;
            }
            match decode(&buffer[..bytes], fd) {
                Some(decoded) => return Ok(Some(decoded)),
                None => tracing::error!(bytes, "a connection handed over came with a message not understood; closed"),
            }
        }
    }
}

fn encode_header(conn: &ParkedConnection) -> [u8; HEADER_BYTES] {
    let mut header = [0u8; HEADER_BYTES];
    header[0..4].copy_from_slice(&MAGIC);
    header[4] = VERSION;
    header[5] = match conn.kind {
        ParkKind::Fresh => 0,
        ParkKind::KeepAlive => 1,
    };
    // 0: not served yet (ids start at 1).
    header[8..16].copy_from_slice(&conn.id.unwrap_or(0).to_le_bytes());
    header[16..24].copy_from_slice(&conn.since_micros.to_le_bytes());
    header[24..32].copy_from_slice(&conn.body_since_micros.to_le_bytes());
    if let Peer::Tcp { remote, local } = conn.peer {
        header[6] = 1;
        put_address(&mut header[32..50], remote);
        put_address(&mut header[50..68], local);
    }
    header[68..72].copy_from_slice(&(conn.buffered.len() as u32).to_le_bytes());
    header
}

fn put_address(into: &mut [u8], address: SocketAddr) {
    let ip = match address.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    into[..16].copy_from_slice(&ip);
    into[16..18].copy_from_slice(&address.port().to_le_bytes());
}

/// An address as [`put_address`] wrote it: IPv4 travels mapped into IPv6 (an IPv6 listener
/// is IPv6-only, so a mapped address is never a real IPv6 peer here).
fn get_address(from: &[u8]) -> SocketAddr {
    let octets: [u8; 16] = from[..16].try_into().expect("16 bytes");
    let ip = Ipv6Addr::from(octets);
    let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
    SocketAddr::new(ip, u16::from_le_bytes([from[16], from[17]]))
}

fn decode(message: &[u8], fd: OwnedFd) -> Option<ParkedConnection> {
    let header = message.get(..HEADER_BYTES)?;
    if header[0..4] != MAGIC || header[4] != VERSION {
        return None;
    }
    let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    let len = u32::from_le_bytes(header[68..72].try_into().expect("4 bytes")) as usize;
    let buffered = message.get(HEADER_BYTES..HEADER_BYTES + len)?.to_vec();
    let peer = match header[6] {
        0 => Peer::Unix,
        _ => Peer::Tcp { remote: get_address(&header[32..50]), local: get_address(&header[50..68]) },
    };
    let kind = if header[5] == 1 { ParkKind::KeepAlive } else { ParkKind::Fresh };
    let mut conn = ParkedConnection::new(fd, peer, kind, buffered, word(16));
    conn.body_since_micros = word(24);
    conn.id = Some(word(8)).filter(|&id| id != 0);
    Some(conn)
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    #[test]
    fn a_connection_crosses_with_its_bytes_peer_and_times() {
        let queue = HandoffQueue::new().unwrap();
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let peer = Peer::Tcp { remote: "[2001:db8::1]:4321".parse().unwrap(), local: "127.0.0.1:80".parse().unwrap() };
        let mut conn = ParkedConnection::new(ours.into(), peer, ParkKind::KeepAlive, b"GET / HT".to_vec(), 17);
        conn.body_since_micros = 23;
        conn.id = Some(5);
        queue.send(conn).map_err(|e| format!("{e:?}")).unwrap();
        let mut buffer = vec![0u8; MAX_MESSAGE_BYTES];
        let got = queue.receive(&mut buffer).unwrap().expect("one connection waiting");
        assert_eq!((got.since_micros, got.body_since_micros, got.kind, got.id), (17, 23, ParkKind::KeepAlive, Some(5)));
        assert_eq!(got.buffered, b"GET / HT");
        let Peer::Tcp { remote, local } = got.peer else { panic!("{:?}", got.peer) };
        assert_eq!((remote.to_string(), local.to_string()), ("[2001:db8::1]:4321".into(), "127.0.0.1:80".into()));
        // The socket itself crossed: what one end writes, the other reads.
        let mut stream = std::os::unix::net::UnixStream::from(got.fd);
        theirs.write_all(b"ping").unwrap();
        let mut four = [0u8; 4];
        stream.read_exact(&mut four).unwrap();
        assert_eq!(&four, b"ping");
        assert!(queue.receive(&mut buffer).unwrap().is_none(), "nothing else waits");
    }

    #[test]
    fn the_largest_parked_request_fits_one_message() {
        let queue = HandoffQueue::new().unwrap();
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let big = vec![b'x'; MAX_PARKED_BYTES + 8 * 1024];
        let conn = ParkedConnection::new(ours.into(), Peer::Unix, ParkKind::Fresh, big.clone(), 0);
        queue.send(conn).map_err(|e| format!("{e:?}")).unwrap();
        let mut buffer = vec![0u8; MAX_MESSAGE_BYTES];
        let got = queue.receive(&mut buffer).unwrap().unwrap();
        assert_eq!(got.buffered, big);
    }

    #[test]
    fn a_full_queue_gives_the_connection_back() {
        let queue = HandoffQueue::new().unwrap();
        let mut kept = Vec::new();
        let full = loop {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            kept.push(theirs);
            let conn = ParkedConnection::new(ours.into(), Peer::Unix, ParkKind::Fresh, vec![b'x'; 60 * 1024], 0);
            match queue.send(conn) {
                Ok(()) => assert!(kept.len() < 10_000, "the queue never filled"),
                Err(SendError::Full(conn)) => break conn,
                Err(SendError::Failed(errno)) => panic!("{errno}"),
            }
        };
        assert_eq!(full.buffered.len(), 60 * 1024, "nothing lost");
    }
}
