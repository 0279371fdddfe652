//! L3: answers in Redis, shared by every replica of an engine.
//!
//! A small RESP2 client for the three commands the cache needs (`AUTH`, `GET`, `SET ... PX`),
//! over a few pooled connections. Redis is an optimisation, never a dependency: every
//! operation has a timeout, and a failure (refused, reset, slow, an error reply) drops the
//! connection, counts as an error, and keeps the worker off Redis for [`BACKOFF`], so a
//! Redis that is down costs each request at most one timeout and then nothing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes, BytesMut};
use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::Key;

/// How long the worker leaves Redis alone after a failure.
pub const BACKOFF: Duration = Duration::from_secs(1);
/// How often an idle worker checks that Redis answers (for `blaze_response_cache_redis_up`).
pub const PROBE_EVERY: Duration = Duration::from_secs(10);
/// Idle connections kept.
const POOL: usize = 8;
/// The prefix of the cache's keys in Redis.
const PREFIX: &str = "blaze:answer:";
/// Largest reply read (an answer is at most this big).
const MAX_REPLY: usize = 64 << 20;

/// Where Redis is.
#[derive(Debug, Clone)]
pub struct Config {
    /// `HOST:PORT`.
    pub address: String,
    /// A file holding the password (`AUTH`), read at each new connection (a rotated Secret
    /// is picked up).
    pub password_file: Option<PathBuf>,
    /// Longest a command may take, connecting included.
    pub timeout: Duration,
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis at {0} did not answer within {1:?}")]
    Timeout(String, Duration),
    #[error("redis: {0}")]
    Io(#[from] std::io::Error),
    #[error("redis replied with an error: {0}")]
    Reply(String),
    #[error("redis: unexpected reply")]
    Protocol,
    /// Within the back-off after a failure: not tried.
    #[error("redis failed less than {BACKOFF:?} ago")]
    Backoff,
}

/// The Redis level.
#[derive(Debug)]
pub struct Redis {
    config: Config,
    idle: Mutex<Vec<TcpStream>>,
    failed_at: Mutex<Option<Instant>>,
    /// 1 after a command Redis carried out, 0 after one that failed (an error reply
    /// included: a refused password means Redis does not serve this worker).
    up: Gauge,
}

impl Redis {
    /// A client for `config`; connects on first use. `up` follows whether Redis answers.
    pub fn new(config: Config, up: Gauge) -> Self {
        Self { config, idle: Mutex::new(Vec::new()), failed_at: Mutex::new(None), up }
    }

    /// Checks that Redis answers (`PING`), which sets the `up` gauge like any command.
    pub async fn probe(&self) -> Result<(), Error> {
        match self.command(&[b"PING"]).await? {
            Reply::Status(_) => Ok(()),
            _ => Err(Error::Protocol),
        }
    }

    /// The answer stored for `key`, if any.
    pub async fn get(&self, key: &Key) -> Result<Option<Bytes>, Error> {
        let name = format!("{PREFIX}{}", key.hex());
        match self.command(&[b"GET", name.as_bytes()]).await? {
            Reply::Bulk(b) => Ok(Some(b)),
            Reply::Nil => Ok(None),
            _ => Err(Error::Protocol),
        }
    }

    /// Stores `value` for `key`, expiring after `ttl`.
    pub async fn set(&self, key: &Key, value: &[u8], ttl: Duration) -> Result<(), Error> {
        let name = format!("{PREFIX}{}", key.hex());
        let ms = ttl.as_millis().max(1).to_string();
        match self.command(&[b"SET", name.as_bytes(), value, b"PX", ms.as_bytes()]).await? {
            Reply::Status(_) => Ok(()),
            _ => Err(Error::Protocol),
        }
    }

    /// Runs one command within the timeout, on a pooled connection or a new one.
    async fn command(&self, args: &[&[u8]]) -> Result<Reply, Error> {
        if self.failed_at.lock().is_some_and(|t| t.elapsed() < BACKOFF) {
            return Err(Error::Backoff);
        }
        let timeout = self.config.timeout;
        let result = match tokio::time::timeout(timeout, self.exchange(args)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(self.config.address.clone(), timeout)),
        };
        match &result {
            Ok(_) => {
                self.up.set(1);
            }
            // An error reply leaves the connection usable; anything else does not.
            Err(Error::Reply(_)) => {
                self.up.set(0);
            }
            Err(_) => {
                self.up.set(0);
                *self.failed_at.lock() = Some(Instant::now());
            }
        }
        result
    }

    async fn exchange(&self, args: &[&[u8]]) -> Result<Reply, Error> {
        let pooled = self.idle.lock().pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect().await?,
        };
        let reply = round_trip(&mut conn, args).await?;
        if !matches!(reply, Reply::Error(_)) {
            let mut idle = self.idle.lock();
            if idle.len() < POOL {
                idle.push(conn);
            }
        }
        match reply {
            Reply::Error(e) => Err(Error::Reply(e)),
            r => Ok(r),
        }
    }

    async fn connect(&self) -> Result<TcpStream, Error> {
        let mut conn = TcpStream::connect(&self.config.address).await?;
        conn.set_nodelay(true)?;
        if let Some(file) = &self.config.password_file {
            let password = tokio::fs::read_to_string(file).await?;
            match round_trip(&mut conn, &[b"AUTH", password.trim_end().as_bytes()]).await? {
                Reply::Status(_) => {}
                Reply::Error(e) => return Err(Error::Reply(e)),
                _ => return Err(Error::Protocol),
            }
        }
        Ok(conn)
    }
}

/// A reply, of the kinds these commands get.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Bytes),
    Nil,
}

/// Writes a command and reads its reply.
async fn round_trip(conn: &mut TcpStream, args: &[&[u8]]) -> Result<Reply, Error> {
    conn.write_all(&encode(args)).await?;
    let mut buf = BytesMut::with_capacity(512);
    loop {
        if let Some(reply) = parse(&mut buf)? {
            return Ok(reply);
        }
        if buf.len() > MAX_REPLY {
            return Err(Error::Protocol);
        }
        buf.reserve(4096);
        if conn.read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
}

/// A command as a RESP array of bulk strings.
fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One complete reply off the front of `buf`: `None` while incomplete.
fn parse(buf: &mut BytesMut) -> Result<Option<Reply>, Error> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[1..end]).map_err(|_| Error::Protocol)?.to_owned();
    let reply = match buf.first() {
        Some(b'+') => Reply::Status(line),
        Some(b'-') => Reply::Error(line),
        Some(b':') => Reply::Integer(line.parse().map_err(|_| Error::Protocol)?),
        Some(b'$') => {
            let n: i64 = line.parse().map_err(|_| Error::Protocol)?;
            if n < 0 {
                buf.advance(end + 2);
                return Ok(Some(Reply::Nil));
            }
            let n = n as usize;
            if buf.len() < end + 2 + n + 2 {
                return Ok(None);
            }
            buf.advance(end + 2);
            let data = buf.split_to(n).freeze();
            buf.advance(2);
            return Ok(Some(Reply::Bulk(data)));
        }
        _ => return Err(Error::Protocol),
    };
    buf.advance(end + 2);
    Ok(Some(reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_encode_and_replies_parse_whole_or_not_at_all() {
        assert_eq!(encode(&[b"GET", b"k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        for (wire, reply) in [
            (&b"+OK\r\n"[..], Reply::Status("OK".into())),
            (b"-ERR wrong\r\n", Reply::Error("ERR wrong".into())),
            (b":42\r\n", Reply::Integer(42)),
            (b"$-1\r\n", Reply::Nil),
            (b"$5\r\nhe\r\no\r\n", Reply::Bulk(Bytes::from_static(b"he\r\no"))),
        ] {
            // Cut anywhere before its end, a reply is incomplete.
            for cut in 0..wire.len() {
                let mut b = BytesMut::from(&wire[..cut]);
                assert_eq!(parse(&mut b).unwrap(), None, "{wire:?} cut at {cut}");
            }
            let mut b = BytesMut::from(wire);
            b.extend_from_slice(b"+NEXT\r\n");
            assert_eq!(parse(&mut b).unwrap(), Some(reply));
            assert_eq!(&b[..], b"+NEXT\r\n");
        }
        assert!(parse(&mut BytesMut::from(&b"?\r\n"[..])).is_err());
    }
}
