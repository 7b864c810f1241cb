//! The TCP sockets listening on this host (this network namespace), read
//! from `/proc/net/tcp` and `/proc/net/tcp6`: for `sesame doctor`'s bypass
//! check (what else listens on an upstream's port) and for an upgrade (is
//! an address in use by the process handing over, or by another one).

use std::net::{IpAddr, SocketAddr};

/// A listening socket: its address and its inode (what `/proc/PID/fd/N`
/// links to, as `socket:[INODE]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Socket {
    pub addr: SocketAddr,
    pub inode: u64,
}

/// Every listening socket, or `None` where `/proc` cannot tell.
pub struct Listening(Option<Vec<Socket>>);

impl Listening {
    pub fn read() -> Listening {
        let v4 = std::fs::read_to_string("/proc/net/tcp");
        let v6 = std::fs::read_to_string("/proc/net/tcp6");
        if v4.is_err() && v6.is_err() {
            return Listening(None);
        }
        let mut all = Vec::new();
        for text in [v4.unwrap_or_default(), v6.unwrap_or_default()] {
            all.extend(text.lines().skip(1).filter_map(parse_line));
        }
        Listening(Some(all))
    }

    /// The addresses beyond loopback listening on `port`; `None` if that
    /// cannot be known.
    pub fn open_beyond_loopback(&self, port: u16) -> Option<Vec<SocketAddr>> {
        let all = self.0.as_ref()?;
        Some(
            all.iter()
                .map(|s| s.addr)
                .filter(|a| a.port() == port && !a.ip().is_loopback())
                .collect(),
        )
    }

    /// Does process `pid` hold a socket listening on exactly `addr`?
    /// `None` if that cannot be known (no `/proc`, or not allowed to read
    /// the process's descriptors).
    pub fn held_by(&self, pid: u32, addr: SocketAddr) -> Option<bool> {
        let inodes: Vec<u64> = self
            .0
            .as_ref()?
            .iter()
            .filter(|s| s.addr == addr)
            .map(|s| s.inode)
            .collect();
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
        Some(fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .ok()
                .and_then(|l| socket_inode(&l.to_string_lossy()))
                .is_some_and(|i| inodes.contains(&i))
        }))
    }
}

/// `socket:[12345]`, a descriptor's link to a socket.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// A listening socket from a line of `/proc/net/tcp{,6}` (`sl local_address
/// rem_address st tx:rx tr:tm retrnsmt uid timeout inode ...`; state `0A`
/// is LISTEN; addresses in hex, each 32-bit word in host byte order).
fn parse_line(line: &str) -> Option<Socket> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
    if *state != "0A" {
        return None;
    }
    let (ip_hex, port_hex) = local.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    let words: Vec<u32> = (0..ip_hex.len() / 8)
        .map(|i| u32::from_str_radix(ip_hex.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    let ip = match words.as_slice() {
        [w] => IpAddr::from(u32::from_be(*w).to_be_bytes()),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            let v6 = std::net::Ipv6Addr::from(bytes);
            // An IPv4 address on a dual-stack socket.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(Socket {
        addr: SocketAddr::new(ip, port),
        inode: inode.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(line: &str) -> Option<SocketAddr> {
        parse_line(line).map(|s| s.addr)
    }

    #[test]
    fn listening_sockets_are_read_from_proc_net_tcp_lines() {
        // 127.0.0.1:3000, 0.0.0.0:8080 (listening), and an established one.
        let v4 = [
            "   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 100 0 0 10 0",
            "   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 100 0 0 10 0",
            "   2: 0100007F:0BB8 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 3 1 0 20 4 30 10 -1",
        ];
        let got: Vec<Option<SocketAddr>> = v4.iter().map(|l| addr(l)).collect();
        assert_eq!(
            got,
            [
                Some("127.0.0.1:3000".parse().unwrap()),
                Some("0.0.0.0:8080".parse().unwrap()),
                None
            ]
        );
        // [::]:3000 and [::1]:3000 (on a little-endian host).
        if cfg!(target_endian = "little") {
            let any6 = "   0: 00000000000000000000000000000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4 1 0 100 0 0 10 0";
            let lo6 = "   1: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 5 1 0 100 0 0 10 0";
            assert_eq!(addr(any6), Some("[::]:3000".parse().unwrap()));
            assert_eq!(addr(lo6), Some("[::1]:3000".parse().unwrap()));
        }
    }

    #[test]
    fn a_socket_is_known_by_its_inode() {
        let line = "   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 48213 1 0 100 0 0 10 0";
        assert_eq!(parse_line(line).map(|s| s.inode), Some(48213));
        assert_eq!(socket_inode("socket:[48213]"), Some(48213));
        assert_eq!(socket_inode("pipe:[48213]"), None);
    }

    #[test]
    fn this_process_is_seen_holding_its_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        let listening = Listening::read();
        assert_eq!(listening.held_by(std::process::id(), a), Some(true));
        drop(l);
        assert_eq!(
            Listening::read().held_by(std::process::id(), a),
            Some(false)
        );
    }
}
