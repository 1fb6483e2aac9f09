//! The load generator: plain std threads, one keep-alive `TcpStream` per
//! concurrent client, requests pre-built as bytes, answers read by status
//! line and Content-Length (chunked bodies are understood too). Every loop is
//! bounded by a request count and a hard deadline, and only ever talks to
//! 127.0.0.1.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One parsed HTTP/1.1 message head plus its body.
pub struct Message {
    /// Status code (responses) or 0 (requests).
    pub status: u16,
    /// The request line's target (requests) or empty (responses).
    pub target: String,
    pub body: Vec<u8>,
    /// Whether the peer asked to close the connection.
    pub close: bool,
}

/// Reads HTTP/1.1 messages off one stream, keeping any bytes past the end of
/// the current message for the next one.
pub struct Reader {
    buf: Vec<u8>,
    filled: usize,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            buf: vec![0; 16 * 1024],
            filled: 0,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Reader {
    fn fill(&mut self, stream: &mut impl Read) -> io::Result<()> {
        if self.filled == self.buf.len() {
            let len = self.buf.len();
            self.buf.resize(len * 2, 0);
        }
        let n = stream.read(&mut self.buf[self.filled..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.filled += n;
        Ok(())
    }

    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.filled, 0);
        self.filled -= n;
    }

    /// Reads one whole message. `Ok(None)` when the peer closed the
    /// connection cleanly between messages. On a non-blocking stream an
    /// error of kind `WouldBlock` leaves what was read in the buffer, and
    /// the next call goes on from there.
    pub fn read(&mut self, stream: &mut impl Read) -> io::Result<Option<Message>> {
        let head_end = loop {
            if let Some(p) = find(&self.buf[..self.filled], b"\r\n\r\n") {
                break p;
            }
            if self.filled > 1 << 20 {
                return Err(io::Error::other("header too large"));
            }
            match self.fill(stream) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && self.filled == 0 => {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            }
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| io::Error::other("header is not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let first = lines.next().unwrap_or("");
        let (status, target) = if first.starts_with("HTTP/") {
            let code = first
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| io::Error::other(format!("bad status line {first:?}")))?;
            (code, String::new())
        } else {
            (0, first.split(' ').nth(1).unwrap_or("").to_owned())
        };
        let mut length = 0usize;
        let mut chunked = false;
        let mut close = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value
                    .parse()
                    .map_err(|_| io::Error::other("bad Content-Length"))?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        let body_start = head_end + 4;
        let body = if chunked {
            let (body, end) = self.read_chunked(stream, body_start)?;
            self.consume(end);
            body
        } else {
            while self.filled < body_start + length {
                self.fill(stream)?;
            }
            let body = self.buf[body_start..body_start + length].to_vec();
            self.consume(body_start + length);
            body
        };
        Ok(Some(Message {
            status,
            target,
            body,
            close,
        }))
    }

    /// The chunked body that starts at `start`, and where it ends. Nothing
    /// is consumed here, so a `WouldBlock` halfway loses nothing.
    fn read_chunked(
        &mut self,
        stream: &mut impl Read,
        start: usize,
    ) -> io::Result<(Vec<u8>, usize)> {
        let mut body = Vec::new();
        let mut at = start;
        loop {
            let line_end = loop {
                if let Some(p) = find(&self.buf[at..self.filled], b"\r\n") {
                    break at + p;
                }
                self.fill(stream)?;
            };
            let size_text = std::str::from_utf8(&self.buf[at..line_end])
                .map_err(|_| io::Error::other("bad chunk size"))?;
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| io::Error::other("bad chunk size"))?;
            let need = line_end + 2 + size + 2;
            while self.filled < need {
                self.fill(stream)?;
            }
            body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
            at = need;
            if size == 0 {
                // Trailers are not used by the servers measured here.
                return Ok((body, at));
            }
        }
    }
}

/// What one load phase is asked to do.
pub struct Load {
    pub addr: SocketAddr,
    /// Pre-built requests; request `i` is `requests[i % len]`.
    pub requests: Arc<Vec<Vec<u8>>>,
    pub total: usize,
    pub concurrency: usize,
    /// Hard deadline for the whole phase, from the first request.
    pub deadline: Duration,
    /// Keep each answer's body (indexed by request number).
    pub keep_bodies: bool,
}

#[derive(Default)]
pub struct LoadResult {
    pub completed: usize,
    pub errors: usize,
    pub elapsed: Duration,
    /// Microseconds, one per completed request, sorted.
    pub latencies_us: Vec<u32>,
    pub statuses: BTreeMap<u16, usize>,
    pub bodies: Vec<(usize, Vec<u8>)>,
    /// CPU time the client threads used (from /proc/thread-self/schedstat).
    pub client_cpu: Duration,
    pub hit_deadline: bool,
    pub first_error: Option<String>,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Percentile in milliseconds (nearest rank).
    pub fn pct_ms(&self, p: f64) -> f64 {
        percentile_ms(&self.latencies_us, p)
    }

    pub fn max_ms(&self) -> f64 {
        self.latencies_us.last().map_or(0.0, |&u| u as f64 / 1000.0)
    }

    pub fn statuses_text(&self) -> String {
        let mut parts: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}×{n}"))
            .collect();
        if self.errors > 0 {
            parts.push(format!("io-errors×{}", self.errors));
        }
        parts.join(" ")
    }
}

pub fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    sorted_us[rank.clamp(1, sorted_us.len()) - 1] as f64 / 1000.0
}

/// CPU time of the calling thread so far.
pub fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

/// What one client of the closed loop saw.
struct ClientOut {
    latencies_us: Vec<u32>,
    statuses: BTreeMap<u16, usize>,
    bodies: Vec<(usize, Vec<u8>)>,
    errors: usize,
    first_error: Option<String>,
    finished: Instant,
    hit_deadline: bool,
}

/// The answer to a request already written, read without blocking the
/// loop: the tokio stream's `try_read`, as `std::io::Read`.
struct TryRead<'a>(&'a tokio::net::TcpStream);

impl Read for TryRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

async fn connect(addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
    let stream = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn exchange(
    stream: &tokio::net::TcpStream,
    reader: &mut Reader,
    request: &[u8],
) -> io::Result<Message> {
    let mut sent = 0;
    while sent < request.len() {
        stream.writable().await?;
        match stream.try_write(&request[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    loop {
        match reader.read(&mut TryRead(stream)) {
            Ok(Some(m)) => return Ok(m),
            Ok(None) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before answering",
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.readable().await?,
            Err(e) => return Err(e),
        }
    }
}

/// One client: its next request as soon as the previous answer is in.
async fn client(
    load: Arc<LoadShape>,
    next: Arc<AtomicUsize>,
    mut stream: Option<tokio::net::TcpStream>,
    start: Instant,
) -> ClientOut {
    let mut out = ClientOut {
        latencies_us: Vec::with_capacity(load.total / 8 + 16),
        statuses: BTreeMap::new(),
        bodies: Vec::new(),
        errors: 0,
        first_error: None,
        finished: Instant::now(),
        hit_deadline: false,
    };
    let mut reader = Reader::default();
    loop {
        if start.elapsed() > load.deadline {
            out.hit_deadline = true;
            break;
        }
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= load.total {
            break;
        }
        let request = &load.requests[i % load.requests.len()];
        let conn = match stream.as_mut() {
            Some(s) => s,
            None => match connect(load.addr).await {
                Ok(s) => {
                    reader = Reader::default();
                    stream.insert(s)
                }
                Err(e) => {
                    out.errors += 1;
                    out.first_error.get_or_insert(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
        };
        let t0 = Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(30),
            exchange(conn, &mut reader, request),
        )
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in 30 s")));
        match answer {
            Ok(m) => {
                let us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
                out.latencies_us.push(us);
                *out.statuses.entry(m.status).or_default() += 1;
                if load.keep_bodies {
                    out.bodies.push((i, m.body));
                }
                if m.close {
                    stream = None;
                }
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(format!("request {i}: {e}"));
                stream = None;
            }
        }
    }
    out.finished = Instant::now();
    out
}

/// The parts of a `Load` the clients share.
struct LoadShape {
    addr: SocketAddr,
    requests: Arc<Vec<Vec<u8>>>,
    total: usize,
    deadline: Duration,
    keep_bodies: bool,
}

/// Runs a closed loop: `concurrency` clients, each sending its next request
/// as soon as the previous answer is in, until `total` requests were sent
/// or the deadline passed.
///
/// Every client is a task on one thread's event loop (tokio's current-thread
/// runtime over epoll), the way wrk drives a server. A thread per
/// connection, blocking on its socket, could not keep Rocket's constant
/// answers busy on their core: the ceilings it measured were 20–30 % under
/// wrk's in the same hour, and every ratio against them was that much too
/// kind (docs/performance.md, 2026-12-08).
pub fn run(load: &Load) -> LoadResult {
    let shape = Arc::new(LoadShape {
        addr: load.addr,
        requests: load.requests.clone(),
        total: load.total,
        deadline: load.deadline,
        keep_bodies: load.keep_bodies,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .expect("the load generator's event loop");
    let next = Arc::new(AtomicUsize::new(0));
    let cpu0 = thread_cpu();
    let (start, outs) = runtime.block_on(async {
        // Every connection is open before the clock starts.
        let mut streams = Vec::with_capacity(load.concurrency);
        for _ in 0..load.concurrency {
            streams.push(connect(shape.addr).await.ok());
        }
        let start = Instant::now();
        let tasks: Vec<_> = streams
            .into_iter()
            .map(|stream| tokio::spawn(client(shape.clone(), next.clone(), stream, start)))
            .collect();
        let mut outs = Vec::with_capacity(tasks.len());
        for task in tasks {
            outs.push(task.await.expect("load client panicked"));
        }
        (start, outs)
    });
    let mut result = LoadResult {
        client_cpu: thread_cpu().saturating_sub(cpu0),
        ..LoadResult::default()
    };
    let mut last = start;
    for out in outs {
        result.latencies_us.extend(out.latencies_us);
        for (s, n) in out.statuses {
            *result.statuses.entry(s).or_default() += n;
        }
        result.bodies.extend(out.bodies);
        result.errors += out.errors;
        result.hit_deadline |= out.hit_deadline;
        if result.first_error.is_none() {
            result.first_error = out.first_error;
        }
        last = last.max(out.finished);
    }
    result.elapsed = last - start;
    result.completed = result.latencies_us.len();
    result.latencies_us.sort_unstable();
    result
}

/// One request on a fresh connection (used for readiness probes).
pub fn get_once(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Message> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes())?;
    Reader::default()
        .read(&mut stream)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no answer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A non-blocking stream as the event loop sees it: each piece in turn,
    /// with "nothing yet" (`WouldBlock`) before every piece.
    struct Pieces {
        pieces: Vec<&'static [u8]>,
        ready: bool,
    }

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if !self.ready {
                self.ready = true;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.ready = false;
            if self.pieces.is_empty() {
                return Ok(0);
            }
            let piece = self.pieces.remove(0);
            buf[..piece.len()].copy_from_slice(piece);
            Ok(piece.len())
        }
    }

    /// Reads one message, calling again after every `WouldBlock`, as the
    /// load generator does when its socket becomes readable.
    fn read_resuming(reader: &mut Reader, stream: &mut Pieces) -> Message {
        for _ in 0..100 {
            match reader.read(stream) {
                Ok(Some(m)) => return m,
                Ok(None) => panic!("closed before a message"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("no message after 100 reads");
    }

    #[test]
    fn a_chunked_answer_cut_anywhere_reads_whole_and_keeps_the_next() {
        let pieces: Vec<&'static [u8]> = vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n",
            b"\r\n5\r\nhel",
            b"lo\r\n6\r\n world\r\n0\r",
            b"\n\r\nHTTP/1.1 302 Found\r\nContent-Length: 2\r\n\r\nok",
        ];
        let mut stream = Pieces {
            pieces,
            ready: false,
        };
        let mut reader = Reader::default();
        let first = read_resuming(&mut reader, &mut stream);
        assert_eq!(
            (first.status, first.body.as_slice()),
            (200, &b"hello world"[..])
        );
        let second = read_resuming(&mut reader, &mut stream);
        assert_eq!((second.status, second.body.as_slice()), (302, &b"ok"[..]));
    }

    #[test]
    fn a_content_length_body_cut_in_two_reads_whole() {
        let mut stream = Pieces {
            pieces: vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{\"a\"",
                b":true}",
            ],
            ready: false,
        };
        let m = read_resuming(&mut Reader::default(), &mut stream);
        assert_eq!(m.body, b"{\"a\":true}");
    }
}
