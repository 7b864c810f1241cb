//! Who the client is: the TCP peer, unless the peer is a configured trusted
//! proxy, in which case the nearest untrusted address in `X-Forwarded-For`.
//! An unparsable forwarding header is ignored (the peer stands), never a
//! bypass. Also the `X-Forwarded-For` value to send on.

use std::net::IpAddr;

/// An address range such as `10.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
            None => {
                let a = s.parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            (_, ip) => ip,
        };
        let (a, b, bits) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                (u128::from(u32::from(a)), u128::from(u32::from(b)), 32)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        if self.prefix == 0 {
            return true;
        }
        let shift = bits - u32::from(self.prefix);
        (a >> shift) == (b >> shift)
    }
}

impl Cidr {
    /// Is every address of this range in `outer`?
    pub fn within(&self, outer: &Cidr) -> bool {
        self.addr.is_ipv4() == outer.addr.is_ipv4()
            && outer.prefix <= self.prefix
            && outer.contains(self.addr)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The trusted proxies of a deployment.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Vec<Cidr>);

impl TrustedProxies {
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client address of a request from `peer` carrying `forwarded_for`
    /// (all `X-Forwarded-For` values, in order).
    pub fn client(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        if !self.trusts(peer) || forwarded_for.is_empty() {
            return peer;
        }
        let mut hops = Vec::new();
        for v in forwarded_for {
            for part in v.split(',') {
                match part.trim().parse::<IpAddr>() {
                    Ok(ip) => hops.push(ip),
                    // One bad entry spoils the header: ignore it all.
                    Err(_) => return peer,
                }
            }
        }
        // Walk back from the nearest hop past our own trusted proxies.
        hops.iter()
            .rev()
            .copied()
            .find(|ip| !self.trusts(*ip))
            .or(hops.first().copied())
            .unwrap_or(peer)
    }

    /// The `X-Forwarded-For` to send upstream: the chain as received from a
    /// trusted proxy plus the peer, or just the peer.
    pub fn forward(&self, peer: IpAddr, forwarded_for: &[&str]) -> String {
        if self.trusts(peer)
            && !forwarded_for.is_empty()
            && self.client(peer, forwarded_for) != peer
        {
            format!("{}, {peer}", forwarded_for.join(", "))
        } else {
            ip_text(peer)
        }
    }
}

/// `ip` as `Display` writes it; IPv4 without the formatting machinery, which
/// costs about a microsecond (this runs on every proxied request).
pub fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut s = String::with_capacity(15);
    for (i, o) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        if o >= 100 {
            s.push(char::from(b'0' + o / 100));
        }
        if o >= 10 {
            s.push(char::from(b'0' + o / 10 % 10));
        }
        s.push(char::from(b'0' + o % 10));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ip_text_is_display() {
        for o in 0..=255u8 {
            for ip in [
                IpAddr::from([o, 0, 255, o]),
                IpAddr::from([10, o, 1, 99]),
                IpAddr::from([o; 4]),
            ] {
                assert_eq!(ip_text(ip), ip.to_string());
            }
        }
        assert_eq!(ip_text(ip("::1")), "::1");
        assert_eq!(ip_text(ip("2001:db8::ff")), "2001:db8::ff");
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.1.2.3")) && !c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.9.9.9")));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.1")));
        assert!(Cidr::parse("::1/128").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "x/8", "10.0.0/8", ""] {
            assert!(Cidr::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn client_address() {
        let none = TrustedProxies::default();
        assert_eq!(
            none.client(ip("1.2.3.4"), &["9.9.9.9"]),
            ip("1.2.3.4"),
            "no trusted proxies: header ignored"
        );
        let t = TrustedProxies(vec![Cidr::parse("10.0.0.0/8").unwrap()]);
        assert_eq!(t.client(ip("10.0.0.1"), &["9.9.9.9"]), ip("9.9.9.9"));
        assert_eq!(
            t.client(ip("10.0.0.1"), &["6.6.6.6, 9.9.9.9, 10.0.0.7"]),
            ip("9.9.9.9"),
            "rightmost untrusted"
        );
        assert_eq!(
            t.client(ip("10.0.0.1"), &["6.6.6.6", "9.9.9.9"]),
            ip("9.9.9.9"),
            "several headers"
        );
        assert_eq!(
            t.client(ip("10.0.0.1"), &["garbage, 9.9.9.9"]),
            ip("10.0.0.1"),
            "unparsable: ignored"
        );
        assert_eq!(
            t.client(ip("5.5.5.5"), &["9.9.9.9"]),
            ip("5.5.5.5"),
            "untrusted peer"
        );
        assert_eq!(t.forward(ip("10.0.0.1"), &["9.9.9.9"]), "9.9.9.9, 10.0.0.1");
        assert_eq!(t.forward(ip("5.5.5.5"), &["9.9.9.9"]), "5.5.5.5");
    }
}
