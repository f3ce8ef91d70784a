//! Where a webhook may go (SPEC §12 "SSRF"): the URL rules of a subscription, and the address
//! check made **after name resolution, at connect time, on every attempt** — the client's
//! resolver drops every private or loopback address, so a name that resolves to `127.0.0.1` is
//! refused like the literal. `WEBHOOK_ALLOW_PRIVATE=true` lifts both.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::MAX_URL_CHARS;

/// Whether an address is one a receiver on the internet never has: loopback, RFC 1918,
/// link-local (cloud metadata `169.254.169.254` too), carrier-grade NAT `100.64.0.0/10`,
/// `0.0.0.0/8`, multicast, broadcast and reserved; `::1`, `::`, `fc00::/7`, `fe80::/10`,
/// multicast, and the IPv4-mapped and -compatible forms of the IPv4 ones.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => private_v4(v4),
        IpAddr::V6(v6) => private_v6(v6),
    }
}

fn private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        // 240.0.0.0/4, reserved
        || a >= 240
}

fn private_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return private_v4(v4);
    }
    let segments = ip.segments();
    // IPv4-compatible `::a.b.c.d` (deprecated, still routed by some stacks)
    if segments[..6].iter().all(|s| *s == 0) && !ip.is_loopback() && !ip.is_unspecified() {
        let [.., hi, lo] = segments;
        return private_v4(Ipv4Addr::from(((hi as u32) << 16) | lo as u32));
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fc00::/7 unique local
        || (segments[0] & 0xfe00) == 0xfc00
        // fe80::/10 link-local
        || (segments[0] & 0xffc0) == 0xfe80
}

/// What is wrong with a subscription URL, or `None`.
pub fn check_url(raw: &str, allow_private: bool) -> Option<String> {
    let n = raw.chars().count();
    if n > MAX_URL_CHARS {
        return Some(format!(
            "must be at most {MAX_URL_CHARS} characters (got {n})"
        ));
    }
    let url = match reqwest::Url::parse(raw) {
        Ok(url) => url,
        Err(e) => return Some(format!("must be an absolute https URL ({e})")),
    };
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        "http" => {
            return Some("must be https (http only with WEBHOOK_ALLOW_PRIVATE=true)".into());
        }
        other => return Some(format!("must be an absolute https URL (not {other}:)")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Some("must not contain a user name or password".into());
    }
    if url.fragment().is_some() {
        return Some("must not contain a fragment (#…)".into());
    }
    let Some(host) = url.host() else {
        return Some("must name a host".into());
    };
    if !allow_private {
        let literal = match host {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(_) => None,
        };
        if let Some(ip) = literal.filter(|ip| is_private(*ip)) {
            return Some(format!(
                "names a private or loopback address ({ip}); receivers must be reachable on the internet (WEBHOOK_ALLOW_PRIVATE=true lifts this)"
            ));
        }
    }
    None
}

/// The literal address of a URL's host, if it is one (the resolver is not asked for those).
pub fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// The error of a name whose every address is private: the attempt's class is `blocked`.
#[derive(Debug, thiserror::Error)]
#[error("{name} resolves only to private or loopback addresses ({addrs})")]
pub struct Blocked {
    pub name: String,
    pub addrs: String,
}

/// Whether a client error was the guard refusing an address.
pub fn is_blocked(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.is::<Blocked>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The system resolver, keeping only the addresses a receiver may have.
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|a| !is_private(a.ip()))
                .collect();
            if allowed.is_empty() {
                let addrs = resolved
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Box::new(Blocked { name: host, addrs }) as _);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The client deliveries are posted with: `timeout` per attempt, redirects not followed, no
/// proxy from the environment (a proxy would connect for us, past the guard), and — unless
/// `allow_private` — the guarded resolver.
pub fn client(timeout: Duration, allow_private: bool) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!(
            "bengkel-whatsapp/",
            env!("CARGO_PKG_VERSION"),
            " webhooks"
        ))
        .pool_idle_timeout(Duration::from_secs(30));
    let builder = if allow_private {
        builder
    } else {
        builder.dns_resolver(Arc::new(GuardedResolver))
    };
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_addresses_are_recognised() {
        for s in [
            "127.0.0.1",
            "127.8.9.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
        ] {
            assert!(is_private(ip(s)), "{s} should be private");
        }
        for s in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "100.63.255.255",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_private(ip(s)), "{s} should be public");
        }
    }

    #[test]
    fn subscription_urls_are_checked() {
        assert_eq!(check_url("https://example.com/hooks", false), None);
        assert_eq!(check_url("https://localhost:8443/x", false), None);
        assert!(
            check_url("http://example.com/", false)
                .unwrap()
                .contains("https")
        );
        assert_eq!(check_url("http://127.0.0.1:9000/", true), None);
        assert!(check_url("/relative", false).is_some());
        assert!(check_url("ftp://example.com/", true).is_some());
        assert!(
            check_url("https://user:pw@example.com/", false)
                .unwrap()
                .contains("user")
        );
        assert!(
            check_url("https://127.0.0.1/", false)
                .unwrap()
                .contains("private")
        );
        assert!(
            check_url("https://[::1]/", false)
                .unwrap()
                .contains("private")
        );
        assert!(
            check_url("https://[::ffff:10.0.0.1]/", false)
                .unwrap()
                .contains("private")
        );
        assert!(check_url("https://169.254.169.254/latest", false).is_some());
        let long = format!("https://example.com/{}", "a".repeat(2040));
        assert!(check_url(&long, false).unwrap().contains("2048"));
    }

    #[tokio::test]
    async fn a_name_of_a_loopback_address_is_blocked() {
        let resolved = GuardedResolver.resolve("localhost".parse().unwrap()).await;
        let error = resolved.err().expect("localhost must be refused");
        assert!(is_blocked(error.as_ref()), "{error}");
    }
}
