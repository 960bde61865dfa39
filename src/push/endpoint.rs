//! Which push endpoints podo will contact (docs/API.md "Web push", endpoint policy).
//!
//! An endpoint is a URL that any signed-in user chooses, and the server POSTs to it: unchecked,
//! that is a blind server-side request forgery into the server's own network. So by default only
//! `https://` endpoints on public addresses are accepted, checked twice: when subscribing (the URL
//! as written, [`EndpointPolicy::check`]) and before every delivery (the addresses its name
//! resolves to at that moment, [`EndpointPolicy::resolve`]), because a name can be pointed at a
//! private address after it was accepted (DNS rebinding). `PODO_PUSH_ALLOW_PRIVATE=true` lifts
//! both checks, `http://` included, for a push service on the LAN and for tests.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use url::{Host, Url};

/// How long the name of an endpoint may take to resolve: part of the 5 s connect budget.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Names that by definition lead into a private network (RFC 6761 `localhost`, RFC 6762 `.local`,
/// RFC 8375 `home.arpa`, ICANN's private-use `.internal`).
const PRIVATE_SUFFIXES: [&str; 4] = ["localhost", "local", "home.arpa", "internal"];

#[derive(Clone, Copy, Debug)]
pub struct EndpointPolicy {
    allow_private: bool,
}

/// Where one delivery goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Connect to this address (the checked result of resolving the endpoint's host).
    Address(SocketAddr),
    /// Leave resolution to the HTTP client (`PODO_PUSH_ALLOW_PRIVATE`).
    AsWritten,
}

/// Why a delivery was not attempted.
#[derive(Debug, PartialEq, Eq)]
pub enum Unroutable {
    /// The endpoint leads only to refused addresses: counted as blocked, never retried.
    Blocked(String),
    /// The name did not resolve (now): worth another try.
    Unresolved(String),
}

impl EndpointPolicy {
    pub fn new(allow_private: bool) -> Self {
        EndpointPolicy { allow_private }
    }

    /// Checks an endpoint as written; `Err` says why it is refused, for `fields.endpoint`.
    pub fn check(&self, endpoint: &str) -> Result<(), &'static str> {
        let url = Url::parse(endpoint).map_err(|_| "an absolute URL")?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("a URL without user name or password");
        }
        match url.scheme() {
            "https" => {}
            "http" if self.allow_private => {}
            _ if self.allow_private => return Err("an http(s) URL"),
            _ => return Err("an https URL"),
        }
        let host = url.host().ok_or("a URL with a host")?;
        if self.allow_private {
            return Ok(());
        }
        match host {
            Host::Domain(name) if is_private_name(name) => {
                Err("a push service on the internet (this name is private)")
            }
            Host::Domain(_) => Ok(()),
            Host::Ipv4(ip) if is_public_v4(ip) => Ok(()),
            Host::Ipv6(ip) if is_public_v6(ip) => Ok(()),
            Host::Ipv4(_) | Host::Ipv6(_) => {
                Err("a push service on the internet (this address is not public)")
            }
        }
    }

    /// Where to connect for `endpoint` now: its host resolved, and only public addresses kept.
    pub async fn resolve(&self, endpoint: &str) -> Result<Route, Unroutable> {
        if self.allow_private {
            return Ok(Route::AsWritten);
        }
        self.check(endpoint)
            .map_err(|why| Unroutable::Blocked(why.to_owned()))?;
        let url = Url::parse(endpoint).map_err(|err| Unroutable::Blocked(err.to_string()))?;
        let port = url.port_or_known_default().unwrap_or(443);
        let name = match url.host() {
            Some(Host::Domain(name)) => name.to_owned(),
            Some(Host::Ipv4(ip)) => return Ok(Route::Address(SocketAddr::new(ip.into(), port))),
            Some(Host::Ipv6(ip)) => return Ok(Route::Address(SocketAddr::new(ip.into(), port))),
            None => return Err(Unroutable::Blocked("no host".into())),
        };
        let found = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port)))
            .await
            .map_err(|_| Unroutable::Unresolved("name resolution timed out".into()))?
            .map_err(|err| Unroutable::Unresolved(format!("name did not resolve: {err}")))?;
        choose(found)
    }
}

/// The first public address among those a name resolved to.
fn choose(found: impl IntoIterator<Item = SocketAddr>) -> Result<Route, Unroutable> {
    let mut refused = Vec::new();
    for address in found {
        if is_public(address.ip()) {
            return Ok(Route::Address(address));
        }
        refused.push(address.ip());
    }
    Err(Unroutable::Blocked(format!(
        "resolves only to addresses that are not public: {refused:?}"
    )))
}

fn is_private_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    PRIVATE_SUFFIXES.iter().any(|suffix| {
        name == *suffix
            || name
                .strip_suffix(suffix)
                .is_some_and(|rest| rest.ends_with('.'))
    })
}

/// A globally routable unicast address: what a push service on the internet has.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => is_public_v6(ip),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let refused = a == 0 // "this network", 0.0.0.0 included
        || a == 10 // RFC 1918
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || a == 127 // loopback
        || (a == 169 && b == 254) // link-local
        || (a == 172 && (16..32).contains(&b)) // RFC 1918
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast (deprecated)
        || (a == 192 && b == 168) // RFC 1918
        || (a == 198 && (18..20).contains(&b)) // benchmarking 198.18/15
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224; // multicast 224/4, reserved 240/4, broadcast
    !refused
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let embedded_v4 = |high: u16, low: u16| {
        let [h1, h2] = high.to_be_bytes();
        let [l1, l2] = low.to_be_bytes();
        Ipv4Addr::new(h1, h2, l1, l2)
    };
    // Forms that carry an IPv4 address are judged by that address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4); // ::ffff:a.b.c.d
    }
    if segments[..6] == [0; 6] {
        return false; // ::, ::1 and the deprecated IPv4-compatible ::a.b.c.d
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(embedded_v4(segments[6], segments[7])); // NAT64 64:ff9b::/96
    }
    if segments[0] == 0x2002 {
        return is_public_v4(embedded_v4(segments[1], segments[2])); // 6to4 2002::/16
    }
    let global_unicast = segments[0] & 0xe000 == 0x2000; // 2000::/3
    let ietf_special = segments[0] == 0x2001 && segments[1] < 0x0200; // 2001::/23, Teredo included
    let documentation = segments[0] == 0x2001 && segments[1] == 0x0db8; // 2001:db8::/32
    // Everything outside 2000::/3 is refused: fc00::/7, fe80::/10, fec0::/10, ff00::/8, 100::/64...
    global_unicast && !ietf_special && !documentation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_and_allowed_addresses() {
        let refused = [
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.0.9",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::10.0.0.1",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "100::1",
        ];
        for ip in refused {
            assert!(!is_public(ip.parse().unwrap()), "{ip} is refused");
        }
        let allowed = [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "142.250.196.138",
            "172.15.0.1",
            "172.32.0.1",
            "192.169.0.1",
            "223.255.255.255",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:0808:0808::1",
            "2404:6800:4004:80a::200a",
            "2a00:1450:4001::1",
        ];
        for ip in allowed {
            assert!(is_public(ip.parse().unwrap()), "{ip} is allowed");
        }
    }

    #[test]
    fn endpoints_as_written() {
        let strict = EndpointPolicy::new(false);
        for ok in [
            "https://fcm.googleapis.com/fcm/send/abc",
            "https://updates.push.services.mozilla.com/wpush/v2/x",
            "https://web.push.apple.com:443/Q",
            "https://8.8.8.8/x",
            "https://[2a00:1450:4001::1]:8443/x",
        ] {
            assert_eq!(strict.check(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://fcm.googleapis.com/x",
            "http://127.0.0.1:9/x",
            "https://127.0.0.1/x",
            "https://10.1.2.3/x",
            "https://169.254.169.254/latest",
            "https://[::ffff:127.0.0.1]/x",
            "https://[::1]/x",
            "https://[fd00::1]/x",
            "https://2130706433/x",
            "https://0x7f.0.0.1/x",
            "https://localhost/x",
            "https://push.localhost./x",
            "https://printer.local/x",
            "https://router.home.arpa/x",
            "https://push.internal/x",
            "https://user:pw@fcm.googleapis.com/x",
            "ftp://fcm.googleapis.com/x",
            "not a url",
            "/relative",
        ] {
            assert!(strict.check(bad).is_err(), "{bad} is refused");
        }
        let lan = EndpointPolicy::new(true);
        for ok in [
            "http://127.0.0.1:9/x",
            "https://10.1.2.3/x",
            "https://localhost:8443/x",
            "http://[::1]:8080/x",
        ] {
            assert_eq!(lan.check(ok), Ok(()), "{ok} with PODO_PUSH_ALLOW_PRIVATE");
        }
        for bad in ["ftp://127.0.0.1/x", "not a url", "https://u@10.0.0.1/"] {
            assert!(lan.check(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_name_is_judged_by_what_it_resolves_to() {
        let at = |ip: &str| SocketAddr::new(ip.parse().unwrap(), 443);
        // A rebinding name that points at private addresses only is never contacted.
        assert!(matches!(
            choose([at("127.0.0.1"), at("10.0.0.1"), at("::1")]),
            Err(Unroutable::Blocked(_))
        ));
        assert!(matches!(choose([]), Err(Unroutable::Blocked(_))));
        // Public addresses are used, private ones among them skipped.
        assert_eq!(
            choose([at("192.168.0.1"), at("8.8.4.4"), at("8.8.8.8")]),
            Ok(Route::Address(at("8.8.4.4")))
        );
    }

    #[actix_web::test]
    async fn delivery_resolves_and_checks() {
        let strict = EndpointPolicy::new(false);
        assert_eq!(
            strict.resolve("https://8.8.8.8:8443/x").await,
            Ok(Route::Address("8.8.8.8:8443".parse().unwrap()))
        );
        // Stored before the policy existed: refused at delivery too.
        assert!(matches!(
            strict.resolve("http://127.0.0.1:9/x").await,
            Err(Unroutable::Blocked(_))
        ));
        assert!(matches!(
            strict.resolve("https://[::ffff:10.0.0.1]/x").await,
            Err(Unroutable::Blocked(_))
        ));
        let lan = EndpointPolicy::new(true);
        assert_eq!(
            lan.resolve("http://127.0.0.1:9/x").await,
            Ok(Route::AsWritten)
        );
    }
}
