//! `HOST:PORT` as given on the command line.

use std::fmt;
use std::str::FromStr;

/// An address to listen on: a host (an IP address or a name) and a port. The host is kept
/// as written, so the operator can render `$(POD_IP):8000` for the kubelet to expand, and
/// the worker resolves it when it binds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// IP address or name; IPv6 without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl HostPort {
    /// Every IPv4 address of the machine, on `port`.
    pub fn any(port: u16) -> Self {
        Self { host: "0.0.0.0".to_owned(), port }
    }

    /// `host` and `port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self { host: host.into(), port }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not HOST:PORT (IPv6 hosts in brackets)"))?;
        let port = port.parse::<u16>().map_err(|_| format!("{port:?} in {s:?} is not a port"))?;
        let host = match host.strip_prefix('[') {
            Some(inner) => inner.strip_suffix(']').ok_or_else(|| format!("{s:?}: unclosed '['"))?,
            None if host.contains(':') => {
                return Err(format!("{s:?}: put an IPv6 host in brackets, [::1]:{port}"));
            }
            None => host,
        };
        if host.is_empty() {
            return Err(format!("{s:?} has no host (0.0.0.0 listens on every address)"));
        }
        Ok(Self { host: host.to_owned(), port })
    }
}
