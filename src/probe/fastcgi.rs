//! A small synchronous FastCGI 1.0 client: the record codec, name-value pairs, and one exchange with
//! php-fpm under a hard total deadline over connect, write and read, on TCP or a unix socket.
//!
//! php-fpm does not close the connection after a GET_VALUES reply, so replies are read record by
//! record, exactly as far as needed, never to EOF. Every length comes from the wire and is bounded.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};

use crate::escape::cut;
use crate::poll::poll_until;

/// The protocol version, the first byte of every record.
const VERSION: u8 = 1;

/// Record types (FastCGI 1.0, section 8).
pub mod kind {
    pub const BEGIN_REQUEST: u8 = 1;
    pub const END_REQUEST: u8 = 3;
    pub const PARAMS: u8 = 4;
    pub const STDIN: u8 = 5;
    pub const STDOUT: u8 = 6;
    pub const STDERR: u8 = 7;
    pub const GET_VALUES: u8 = 9;
    pub const GET_VALUES_RESULT: u8 = 10;
    pub const UNKNOWN_TYPE: u8 = 11;
}

const ROLE_RESPONDER: u16 = 1;

/// The request id of our one request (0 is for management records).
const REQUEST_ID: u16 = 1;

/// The most reply we read (STDOUT and STDERR together), so a runaway script cannot exhaust memory.
pub const MAX_REPLY: usize = 1 << 20;

/// The detail of [`Error::Refused`] when the connection was refused.
pub const REFUSED: &str = "connection refused";
/// The detail of [`Error::Refused`] when there is no socket file at the path.
pub const NO_SOCKET: &str = "no such socket";

/// What went wrong in an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The deadline passed before the reply was complete.
    Timeout,
    /// Nothing listens at the address (refused, or no such socket file).
    Refused(String),
    /// The host name did not resolve, or not within the deadline.
    Dns(String),
    /// Any other I/O failure (reset, permission denied …).
    Io(String),
    /// The peer answered, but not with valid FastCGI.
    Protocol(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Timeout => f.write_str("timed out"),
            Error::Refused(detail) | Error::Dns(detail) | Error::Io(detail) => f.write_str(detail),
            Error::Protocol(detail) => write!(f, "bad FastCGI reply: {detail}"),
        }
    }
}

fn protocol(detail: impl Into<String>) -> Error {
    Error::Protocol(detail.into())
}

/// A record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The record type.
    pub kind: u8,
    /// The request it belongs to; 0 for management records.
    pub request_id: u16,
    /// Bytes of content that follow.
    pub content_length: u16,
    /// Bytes of padding after the content.
    pub padding: u8,
}

impl Header {
    /// Parses the 8 header bytes.
    pub fn decode(bytes: [u8; 8]) -> Result<Header, Error> {
        if bytes[0] != VERSION {
            return Err(protocol(format!(
                "version byte is {:#04x}, not 1 (is this a FastCGI server?)",
                bytes[0]
            )));
        }
        Ok(Header {
            kind: bytes[1],
            request_id: u16::from_be_bytes([bytes[2], bytes[3]]),
            content_length: u16::from_be_bytes([bytes[4], bytes[5]]),
            padding: bytes[6],
        })
    }
}

/// One record with its content padded to a multiple of 8 bytes, as php-fpm and the spec recommend.
/// `content` must fit in a record (at most 65535 bytes).
pub fn record(kind: u8, request_id: u16, content: &[u8]) -> Vec<u8> {
    let length = u16::try_from(content.len()).expect("record content is at most 65535 bytes");
    let padding = (8 - content.len() % 8) % 8;
    let mut out = Vec::with_capacity(8 + content.len() + padding);
    out.extend_from_slice(&[VERSION, kind]);
    out.extend_from_slice(&request_id.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&[u8::try_from(padding).expect("padding < 8"), 0]);
    out.extend_from_slice(content);
    out.resize(out.len() + padding, 0);
    out
}

/// A stream of records: `content` split into records of at most 65535 bytes, then the empty record
/// that ends the stream.
fn stream(kind: u8, request_id: u16, content: &[u8], out: &mut Vec<u8>) {
    for chunk in content.chunks(usize::from(u16::MAX)) {
        out.extend(record(kind, request_id, chunk));
    }
    out.extend(record(kind, request_id, &[]));
}

/// A decoded name and value.
pub type Pair = (Vec<u8>, Vec<u8>);

/// Name-value pairs: each length in one byte below 128, else in four with the top bit set.
pub fn encode_pairs<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    fn length(n: usize, out: &mut Vec<u8>) {
        match u8::try_from(n) {
            Ok(short) if short < 0x80 => out.push(short),
            _ => {
                let long = u32::try_from(n).expect("a parameter is shorter than 2 GiB");
                out.extend_from_slice(&(long | 0x8000_0000).to_be_bytes());
            }
        }
    }
    let mut out = Vec::new();
    for (name, value) in pairs {
        length(name.len(), &mut out);
        length(value.len(), &mut out);
        out.extend_from_slice(name);
        out.extend_from_slice(value);
    }
    out
}

/// Decodes name-value pairs; lengths that run past the end are an error.
pub fn decode_pairs(mut bytes: &[u8]) -> Result<Vec<Pair>, Error> {
    fn length(bytes: &mut &[u8]) -> Result<usize, Error> {
        let (&first, rest) = bytes
            .split_first()
            .ok_or_else(|| protocol("name-value pair cut short"))?;
        if first < 0x80 {
            *bytes = rest;
            return Ok(usize::from(first));
        }
        let (four, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or_else(|| protocol("name-value length cut short"))?;
        *bytes = rest;
        usize::try_from(u32::from_be_bytes(*four) & 0x7fff_ffff)
            .map_err(|_| protocol("length overflows"))
    }
    let mut pairs = Vec::new();
    while !bytes.is_empty() {
        let name_len = length(&mut bytes)?;
        let value_len = length(&mut bytes)?;
        if name_len.saturating_add(value_len) > bytes.len() {
            return Err(protocol("name-value pair runs past its record"));
        }
        let (name, rest) = bytes.split_at(name_len);
        let (value, rest) = rest.split_at(value_len);
        pairs.push((name.to_vec(), value.to_vec()));
        bytes = rest;
    }
    Ok(pairs)
}

/// The GET_VALUES management record with no names: the 8 bytes `01 09 00 00 00 00 00 00`. php-fpm
/// answers it from a worker, so an answer means a worker was free to take the connection.
pub fn get_values_request() -> Vec<u8> {
    record(kind::GET_VALUES, 0, &[])
}

/// A whole responder request: BEGIN_REQUEST, the parameters, and an empty body.
pub fn request(params: &[(&str, &str)]) -> Vec<u8> {
    let mut begin = [0u8; 8];
    begin[..2].copy_from_slice(&ROLE_RESPONDER.to_be_bytes()); // flags 0: close the connection after
    let mut out = record(kind::BEGIN_REQUEST, REQUEST_ID, &begin);
    let pairs = encode_pairs(params.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
    stream(kind::PARAMS, REQUEST_ID, &pairs, &mut out);
    stream(kind::STDIN, REQUEST_ID, &[], &mut out);
    out
}

/// Reads one record: its header and content (padding is read and dropped).
pub fn read_record(reader: &mut impl Read) -> Result<(Header, Vec<u8>), Error> {
    let mut head = [0u8; 8];
    read_exact(reader, &mut head)?;
    let header = Header::decode(head)?;
    let mut content = vec![0u8; usize::from(header.content_length) + usize::from(header.padding)];
    read_exact(reader, &mut content)?;
    content.truncate(usize::from(header.content_length));
    Ok((header, content))
}

fn read_exact(reader: &mut impl Read, buf: &mut [u8]) -> Result<(), Error> {
    reader.read_exact(buf).map_err(|err| match err.kind() {
        io::ErrorKind::UnexpectedEof => {
            protocol("the connection closed in the middle of the reply")
        }
        _ => io_error(&err),
    })
}

/// The reply to a responder request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    /// The STDOUT stream: CGI headers, a blank line, the body.
    pub stdout: Vec<u8>,
    /// The STDERR stream (PHP warnings, "Primary script unknown" …).
    pub stderr: Vec<u8>,
    /// The application's exit status from END_REQUEST.
    pub app_status: u32,
}

/// Reads records until our request's END_REQUEST; STDOUT and STDERR may arrive in any number of
/// records. More than [`MAX_REPLY`] bytes is an error.
pub fn read_reply(reader: &mut impl Read) -> Result<Reply, Error> {
    let mut reply = Reply::default();
    loop {
        let (header, content) = read_record(reader)?;
        if header.kind == kind::UNKNOWN_TYPE {
            return Err(protocol("the server does not know the record type we sent"));
        }
        if header.request_id != REQUEST_ID {
            return Err(protocol(format!(
                "record for request {} while waiting for request {REQUEST_ID}",
                header.request_id
            )));
        }
        match header.kind {
            kind::STDOUT => reply.stdout.extend_from_slice(&content),
            kind::STDERR => reply.stderr.extend_from_slice(&content),
            kind::END_REQUEST => {
                let body: [u8; 8] = content
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| protocol("END_REQUEST shorter than 8 bytes"))?;
                reply.app_status = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                return match body[4] {
                    0 => Ok(reply),
                    1 => Err(protocol(
                        "the server cannot multiplex connections (CANT_MPX_CONN)",
                    )),
                    2 => Err(protocol("the server is overloaded (OVERLOADED)")),
                    3 => Err(protocol(
                        "the server does not know the responder role (UNKNOWN_ROLE)",
                    )),
                    other => Err(protocol(format!(
                        "END_REQUEST with protocol status {other}"
                    ))),
                };
            }
            other => return Err(protocol(format!("unexpected record type {other}"))),
        }
        if reply.stdout.len() + reply.stderr.len() > MAX_REPLY {
            return Err(protocol(format!(
                "reply larger than {} KiB",
                MAX_REPLY / 1024
            )));
        }
    }
}

/// Reads the one GET_VALUES_RESULT record and its pairs.
pub fn read_get_values_result(reader: &mut impl Read) -> Result<Vec<Pair>, Error> {
    let (header, content) = read_record(reader)?;
    match header.kind {
        kind::GET_VALUES_RESULT if header.request_id == 0 => decode_pairs(&content),
        kind::GET_VALUES_RESULT => Err(protocol("GET_VALUES_RESULT with a request id")),
        kind::UNKNOWN_TYPE => Err(protocol("the server does not support GET_VALUES")),
        other => Err(protocol(format!(
            "record type {other} instead of GET_VALUES_RESULT"
        ))),
    }
}

/// A CGI response from STDOUT: the `Status:` header (absent means 200) and the body.
pub fn parse_cgi(stdout: &[u8]) -> Result<(u16, &[u8]), Error> {
    let (head, body) = split_head(stdout).ok_or_else(|| protocol("no end of the CGI headers"))?;
    let mut status = 200;
    for line in head.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("status") {
            status = value
                .trim()
                .split(' ')
                .next()
                .and_then(|code| code.parse().ok())
                .filter(|code| (100..=999).contains(code))
                .ok_or_else(|| {
                    // The peer's words, bounded here; escaped where they are printed.
                    protocol(format!("bad Status header '{}'", cut(value.trim(), 100)))
                })?;
        }
    }
    Ok((status, body))
}

/// Splits at the first blank line (`\r\n\r\n` or `\n\n`).
fn split_head(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let (at, len) = match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    Some((&bytes[..at], &bytes[at + len..]))
}

/// Where php-fpm listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// TCP host and port.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A unix socket path.
    Unix(std::path::PathBuf),
}

/// A connection whose every read and write is bounded by one deadline.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// A connection to php-fpm with a total deadline.
pub struct Connection {
    stream: Stream,
    deadline: Instant,
    /// Over a unix socket, who opened the listening socket it reached: its uid and pid
    /// (`SO_PEERCRED`, asked once).
    peer: Option<(u32, Option<u32>)>,
}

impl Connection {
    /// Connects within the time left before `deadline`. The socket is left non-blocking: every read and
    /// write waits in poll(2) for the time left, which keeps to the deadline within a millisecond
    /// (socket timeouts count in scheduler ticks, and overshot by 20 ms here).
    pub fn open(address: &Address, deadline: Instant) -> Result<Connection, Error> {
        let (stream, peer) = match address {
            Address::Tcp { host, port } => {
                let stream = connect_tcp(host, *port, deadline)?;
                stream.set_nonblocking(true).map_err(|err| io_error(&err))?;
                (Stream::Tcp(stream), None)
            }
            // Made non-blocking, and left so.
            Address::Unix(path) => {
                let stream = connect_unix(path, deadline)?;
                let peer = rustix::net::sockopt::socket_peercred(&stream)
                    .ok()
                    .map(|cred| {
                        // 0: a process of a pid namespace we cannot see; unknown then.
                        let pid = u32::try_from(cred.pid.as_raw_nonzero().get())
                            .ok()
                            .filter(|&pid| pid != 0);
                        (cred.uid.as_raw(), pid)
                    });
                (Stream::Unix(stream), peer)
            }
        };
        Ok(Connection {
            stream,
            deadline,
            peer,
        })
    }

    /// The process that opened the unix listening socket this connection reached (`SO_PEERCRED`:
    /// who called listen(2), php-fpm's master for its pools); `None` over TCP or when the kernel
    /// cannot say (a process of another pid namespace).
    pub fn listener_pid(&self) -> Option<u32> {
        self.peer.and_then(|(_, pid)| pid)
    }

    /// Why the listening socket this connection reached is not to be believed, if it is not (#18):
    /// a unix socket's listener (`SO_PEERCRED`) or a TCP listener on this host (/proc/net/tcp{,6})
    /// owned by another user than root or us. A listener on another host cannot be checked: `None`.
    pub fn distrust(&self) -> Option<String> {
        match &self.stream {
            Stream::Unix(_) => crate::listener::distrust_owner(
                self.peer.map(|(uid, _)| uid),
                "the socket that answered",
            ),
            Stream::Tcp(s) => {
                let listeners = crate::listener::tcp(s.peer_addr().ok()?);
                crate::listener::distrust(&listeners, "the port that answered")
            }
        }
    }

    /// Sends `bytes` within the deadline.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.write_all(bytes).map_err(|err| io_error(&err))
    }

    /// Waits until the socket is ready for `events`, or fails with `TimedOut` at the deadline.
    fn wait(&self, events: PollFlags) -> io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let timeout =
            Timespec::try_from(left).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let ready = match &self.stream {
            Stream::Tcp(s) => poll(&mut [PollFd::new(s, events)], Some(&timeout)),
            Stream::Unix(s) => poll(&mut [PollFd::new(s, events)], Some(&timeout)),
        };
        match ready {
            Ok(0) => Err(io::ErrorKind::TimedOut.into()),
            Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Runs `op` on the socket until it does not report WouldBlock, waiting for `events` between tries.
    fn retry(
        &mut self,
        events: PollFlags,
        mut op: impl FnMut(&mut Stream) -> io::Result<usize>,
    ) -> io::Result<usize> {
        loop {
            match op(&mut self.stream) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => self.wait(events)?,
                done => return done,
            }
        }
    }
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.retry(PollFlags::IN, |stream| match stream {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        })
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.retry(PollFlags::OUT, |stream| match stream {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn connect_tcp(host: &str, port: u16, deadline: Instant) -> Result<TcpStream, Error> {
    let addrs = super::resolve::resolve(host, port, deadline).map_err(Error::Dns)?;
    let mut last = Error::Io(format!("'{host}' has no address"));
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout);
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => return Ok(stream),
            Err(err) => last = io_error(&err),
        }
    }
    Err(last)
}

/// std's UnixStream has no connect timeout, and a unix socket whose backlog is full makes a blocking
/// connect wait; a non-blocking connect says EAGAIN instead, and is tried again until the deadline.
fn connect_unix(path: &Path, deadline: Instant) -> Result<UnixStream, Error> {
    use rustix::io::Errno;
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    use std::os::fd::OwnedFd;
    let addr = SocketAddrUnix::new(path)
        .map_err(|err| Error::Io(format!("bad socket path '{}': {err}", path.display())))?;
    let connect = || -> Result<OwnedFd, Errno> {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )?;
        rustix::net::connect(&fd, &addr)?;
        Ok(fd)
    };
    // Only a full backlog is asked again; anything else ends the wait at once.
    let connected = poll_until(deadline, Duration::from_millis(5), || match connect() {
        Err(Errno::AGAIN) => Err(()),
        done => Ok(done),
    });
    match connected {
        Ok(Ok(fd)) => Ok(UnixStream::from(fd)),
        Ok(Err(err)) => Err(io_error(&err.into())),
        Err(()) => Err(Error::Timeout),
    }
}

fn io_error(err: &io::Error) -> Error {
    match err.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Error::Timeout,
        io::ErrorKind::ConnectionRefused => Error::Refused(REFUSED.into()),
        io::ErrorKind::NotFound => Error::Refused(NO_SOCKET.into()),
        _ => Error::Io(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// monit's hand-made FastCGI test: GET_VALUES with 8 bytes of padding and no content.
    const MONIT_GET_VALUES: [u8; 16] = [1, 9, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    /// What php-fpm 8.2 answers to it (and to our 8-byte request): an empty GET_VALUES_RESULT.
    const FPM_GET_VALUES_RESULT: [u8; 8] = [1, 10, 0, 0, 0, 0, 0, 0];

    #[test]
    fn get_values_request_is_the_bare_header() {
        assert_eq!(get_values_request(), [1, 9, 0, 0, 0, 0, 0, 0]);
        // monit's padded form decodes to the same record.
        let (header, content) = read_record(&mut &MONIT_GET_VALUES[..]).unwrap();
        assert_eq!(
            header,
            Header {
                kind: kind::GET_VALUES,
                request_id: 0,
                content_length: 0,
                padding: 8
            }
        );
        assert!(content.is_empty());
    }

    #[test]
    fn php_fpm_get_values_reply_decodes() {
        assert_eq!(
            read_get_values_result(&mut &FPM_GET_VALUES_RESULT[..]).unwrap(),
            vec![]
        );
    }

    #[test]
    fn get_values_result_with_values() {
        let pairs = encode_pairs([(&b"FCGI_MPXS_CONNS"[..], &b"0"[..])]);
        let reply = record(kind::GET_VALUES_RESULT, 0, &pairs);
        assert_eq!(
            read_get_values_result(&mut &reply[..]).unwrap(),
            vec![(b"FCGI_MPXS_CONNS".to_vec(), b"0".to_vec())]
        );
    }

    #[test]
    fn records_are_padded_to_eight_bytes() {
        assert_eq!(
            record(kind::STDOUT, 1, b"abc"),
            [1, 6, 0, 1, 0, 3, 5, 0, b'a', b'b', b'c', 0, 0, 0, 0, 0]
        );
        assert_eq!(record(kind::STDIN, 1, b""), [1, 5, 0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn begin_request_matches_the_spec() {
        let bytes = request(&[]);
        // BEGIN_REQUEST, id 1, 8 bytes of body: role 1 (responder), flags 0 (close after).
        assert_eq!(
            bytes[..16],
            [1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
        );
        // Then the empty PARAMS and the empty STDIN that end both streams.
        assert_eq!(
            bytes[16..],
            [1, 4, 0, 1, 0, 0, 0, 0, 1, 5, 0, 1, 0, 0, 0, 0]
        );
    }

    #[test]
    fn pair_lengths_use_one_or_four_bytes() {
        // Spec 3.4: lengths below 128 take one byte.
        assert_eq!(
            encode_pairs([(&b"A"[..], &b"xy"[..])]),
            [1, 2, b'A', b'x', b'y']
        );
        // 128 and up take four, with the top bit set.
        let value = vec![b'v'; 128];
        let bytes = encode_pairs([(&b"N"[..], &value[..])]);
        assert_eq!(bytes[..5], [1, 0x80, 0, 0, 128]);
        assert_eq!(decode_pairs(&bytes).unwrap(), vec![(b"N".to_vec(), value)]);
        let long_name = vec![b'n'; 300];
        let bytes = encode_pairs([(&long_name[..], &b""[..])]);
        assert_eq!(bytes[..5], [0x80, 0, 1, 44, 0]);
        assert_eq!(decode_pairs(&bytes).unwrap(), vec![(long_name, vec![])]);
    }

    #[test]
    fn pairs_running_past_the_end_are_errors() {
        assert!(decode_pairs(&[5, 0, b'a']).is_err());
        assert!(decode_pairs(&[0x80, 0]).is_err());
        assert!(decode_pairs(&[0xff, 0xff, 0xff, 0xff, 0]).is_err());
    }

    #[test]
    fn long_params_are_split_across_records() {
        let value = "x".repeat(70_000);
        let bytes = request(&[("BIG", &value)]);
        let mut reader = &bytes[..];
        read_record(&mut reader).unwrap(); // BEGIN_REQUEST
        let mut params = Vec::new();
        loop {
            let (header, content) = read_record(&mut reader).unwrap();
            assert_eq!(header.kind, kind::PARAMS);
            if content.is_empty() {
                break;
            }
            params.extend(content);
        }
        assert_eq!(decode_pairs(&params).unwrap()[0].1.len(), 70_000);
    }

    fn reply_bytes(parts: &[(u8, &[u8])], protocol_status: u8) -> Vec<u8> {
        let mut out = Vec::new();
        for (kind, content) in parts {
            out.extend(record(*kind, REQUEST_ID, content));
        }
        out.extend(record(
            kind::END_REQUEST,
            REQUEST_ID,
            &[0, 0, 0, 7, protocol_status, 0, 0, 0],
        ));
        out
    }

    #[test]
    fn streams_split_across_records_are_joined() {
        let bytes = reply_bytes(
            &[
                (
                    kind::STDOUT,
                    b"Status: 404 Not Found\r\nContent-type: text/html\r",
                ),
                (kind::STDERR, b"Primary script unknown"),
                (kind::STDOUT, b"\n\r\nFile not found."),
                (kind::STDOUT, b""),
            ],
            0,
        );
        let reply = read_reply(&mut &bytes[..]).unwrap();
        assert_eq!(reply.stderr, b"Primary script unknown");
        assert_eq!(reply.app_status, 7);
        assert_eq!(
            parse_cgi(&reply.stdout).unwrap(),
            (404, &b"File not found."[..])
        );
    }

    #[test]
    fn no_status_header_means_200() {
        assert_eq!(
            parse_cgi(b"Content-type: text/plain\n\npong").unwrap(),
            (200, &b"pong"[..])
        );
        assert!(parse_cgi(b"Content-type: text/plain").is_err());
        assert!(parse_cgi(b"Status: abc\r\n\r\n").is_err());
    }

    #[test]
    fn bad_replies_are_clear_errors() {
        let http = b"HTTP/1.1 400 Bad Request\r\n\r\n";
        let err = read_reply(&mut &http[..]).unwrap_err().to_string();
        assert_eq!(
            err,
            "bad FastCGI reply: version byte is 0x48, not 1 (is this a FastCGI server?)"
        );

        let truncated = &reply_bytes(&[(kind::STDOUT, b"hello")], 0)[..12];
        let err = read_reply(&mut &truncated[..]).unwrap_err().to_string();
        assert_eq!(
            err,
            "bad FastCGI reply: the connection closed in the middle of the reply"
        );

        let overloaded = reply_bytes(&[], 2);
        let err = read_reply(&mut &overloaded[..]).unwrap_err().to_string();
        assert!(err.contains("OVERLOADED"), "{err}");

        let other_request = record(kind::STDOUT, 9, b"x");
        assert!(read_reply(&mut &other_request[..]).is_err());
    }

    #[test]
    fn oversized_replies_stop_at_the_bound() {
        let chunk = vec![b'x'; 65_535];
        let mut bytes = Vec::new();
        for _ in 0..=(MAX_REPLY / chunk.len()) + 1 {
            bytes.extend(record(kind::STDOUT, REQUEST_ID, &chunk));
        }
        let err = read_reply(&mut &bytes[..]).unwrap_err().to_string();
        assert_eq!(err, "bad FastCGI reply: reply larger than 1024 KiB");
    }
}

/// The reply parser on arbitrary input (proptest; runs with `cargo test`, so CI runs it too): never a
/// panic, never more than the bound, and what we encode decodes to itself.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_bytes_are_a_reply_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            if let Ok(reply) = read_reply(&mut &bytes[..]) {
                prop_assert!(reply.stdout.len() + reply.stderr.len() <= bytes.len());
                let _ = parse_cgi(&reply.stdout);
            }
            let _ = read_get_values_result(&mut &bytes[..]);
            let _ = decode_pairs(&bytes);
            let _ = parse_cgi(&bytes);
        }

        #[test]
        fn well_formed_records_survive_mutation(
            chunks in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..8),
            flip in any::<(usize, u8)>(),
        ) {
            let mut bytes = Vec::new();
            for (to_stderr, chunk) in &chunks {
                let kind = if *to_stderr { kind::STDERR } else { kind::STDOUT };
                bytes.extend(record(kind, REQUEST_ID, chunk));
            }
            bytes.extend(record(kind::END_REQUEST, REQUEST_ID, &[0; 8]));
            let reply = read_reply(&mut &bytes[..]).unwrap();
            let stdout: Vec<u8> = chunks.iter().filter(|c| !c.0).flat_map(|c| c.1.clone()).collect();
            let stderr: Vec<u8> = chunks.iter().filter(|c| c.0).flat_map(|c| c.1.clone()).collect();
            prop_assert_eq!(reply.stdout, stdout);
            prop_assert_eq!(reply.stderr, stderr);
            // One flipped byte anywhere: still no panic.
            let at = flip.0 % bytes.len();
            bytes[at] ^= flip.1.max(1);
            let _ = read_reply(&mut &bytes[..]);
        }

        #[test]
        fn pairs_round_trip(pairs in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..300), proptest::collection::vec(any::<u8>(), 0..300)), 0..6)
        ) {
            let encoded = encode_pairs(pairs.iter().map(|(n, v)| (&n[..], &v[..])));
            prop_assert_eq!(decode_pairs(&encoded).unwrap(), pairs);
        }
    }
}
