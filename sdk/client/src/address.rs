//! [`BrokerAddress`]: a broker address in canonical form, and the connection settings the client
//! uses for every broker it talks to.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tonic::codegen::http::Uri;
use tonic::transport::{ClientTlsConfig, Endpoint};

use crate::AddressError;
use crate::tls::TlsError;

/// How long a connection may take to establish before the request that needs it fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP/2 pings keep idle connections (e.g. a consumer in a long poll) from being dropped by
/// middleboxes, and detect a dead broker within interval + timeout.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest HTTP/2 frame a broker may send this client (HTTP/2's default is 16 KiB). A
/// fetch answer of 4 MiB comes in 4 frames rather than 256: a fraction of the reads, wake-ups
/// and frame handling on both sides (consume throughput +13% in `weir bench consume`, both
/// processes spending less CPU; 256 KiB gained half as much). The price is that a frame of a
/// large answer delays other answers on the same connection for as long as it takes to send,
/// 1 ms at 1 GB/s, 8 ms on a 1 Gbit/s link.
const MAX_FRAME_BYTES: u32 = 1 << 20;

/// A broker address as an `http` URI with a host and a port. Two spellings of one address
/// (`broker:7070`, `http://broker:7070/`) are equal, so it keys the connection pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct BrokerAddress(Uri);

impl BrokerAddress {
    /// The endpoint for this broker, with Weir's connection settings: over TLS with `tls`
    /// (the broker's certificate checked against the host of the address), else plaintext.
    pub(crate) fn endpoint(&self, tls: Option<&ClientTlsConfig>) -> Result<Endpoint, TlsError> {
        let endpoint = match tls {
            None => Endpoint::from(self.0.clone()),
            Some(tls) => {
                let transport = |source| TlsError::Transport {
                    addr: self.to_string(),
                    source,
                };
                let host = self.0.host().unwrap_or_default();
                let server_name = host.trim_start_matches('[').trim_end_matches(']');
                Endpoint::from_shared(format!("https://{self}"))
                    .map_err(transport)?
                    .tls_config(tls.clone().domain_name(server_name))
                    .map_err(transport)?
            }
        };
        Ok(endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .max_frame_size(MAX_FRAME_BYTES)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true))
    }
}

impl fmt::Display for BrokerAddress {
    /// `HOST:PORT`, as brokers advertise addresses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.authority() {
            Some(authority) => f.write_str(authority.as_str()),
            None => write!(f, "{}", self.0),
        }
    }
}

impl FromStr for BrokerAddress {
    type Err = AddressError;

    /// `HOST:PORT` or `http://HOST:PORT[/]`. The port is required, as in Kafka's bootstrap
    /// addresses, because a default of 80 would only hide a typo. TLS is a setting of the
    /// client, applied to every broker it reaches (brokers advertise `HOST:PORT`), so `https`
    /// (and every other scheme) is refused rather than taken to mean something per address.
    fn from_str(addr: &str) -> Result<Self, Self::Err> {
        let addr = addr.trim();
        if addr.is_empty() {
            return Err(AddressError::Empty);
        }
        let with_scheme = match addr.split_once("://") {
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => addr.to_owned(),
            Some((scheme, _)) => {
                return Err(AddressError::UnsupportedScheme {
                    scheme: scheme.to_owned(),
                });
            }
            None => format!("http://{addr}"),
        };
        let uri: Uri = with_scheme.parse().map_err(AddressError::Malformed)?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(AddressError::Empty);
        }
        // `Uri::port` is `None` both without a port and with an unparsable one; tell them apart.
        let authority = uri.authority().map_or("", |authority| authority.as_str());
        let after_host = authority
            .rsplit_once(']')
            .map_or(authority, |(_, after_ipv6)| after_ipv6);
        match after_host.rsplit_once(':') {
            None => Err(AddressError::MissingPort),
            Some((_, port)) if port.parse::<u16>().is_err() => Err(AddressError::InvalidPort {
                port: port.to_owned(),
            }),
            Some(_) => Ok(Self(uri)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(addr: &str) -> String {
        addr.parse::<BrokerAddress>()
            .unwrap_or_else(|err| panic!("{addr:?} should parse: {err}"))
            .0
            .to_string()
    }

    #[test]
    fn host_port_gets_the_http_scheme() {
        assert_eq!(normalized("127.0.0.1:7070"), "http://127.0.0.1:7070/");
        assert_eq!(normalized(" localhost:7070 "), "http://localhost:7070/");
        assert_eq!(normalized("[::1]:7070"), "http://[::1]:7070/");
    }

    #[test]
    fn http_addresses_are_kept() {
        assert_eq!(normalized("http://broker-1:7070"), "http://broker-1:7070/");
        assert_eq!(normalized("HTTP://broker-1:7070/"), "http://broker-1:7070/");
    }

    #[test]
    fn spellings_of_one_address_are_equal_and_display_as_host_port() {
        let plain: BrokerAddress = "broker-1:7070".parse().expect("valid");
        let full: BrokerAddress = "http://broker-1:7070/".parse().expect("valid");
        assert_eq!(plain, full);
        assert_eq!(full.to_string(), "broker-1:7070");
        let other: BrokerAddress = "broker-2:7070".parse().expect("valid");
        assert_ne!(plain, other);
    }

    #[test]
    fn other_schemes_and_garbage_are_refused() {
        let parse = |addr: &str| addr.parse::<BrokerAddress>();
        assert!(matches!(
            parse("https://broker:7070"),
            Err(AddressError::UnsupportedScheme { scheme }) if scheme == "https"
        ));
        assert!(matches!(parse("   "), Err(AddressError::Empty)));
        assert!(matches!(
            parse("http://"),
            Err(AddressError::Malformed(_) | AddressError::Empty)
        ));
        assert!(matches!(
            parse("broker:port"),
            Err(AddressError::InvalidPort { port }) if port == "port"
        ));
        assert!(matches!(parse("broker"), Err(AddressError::MissingPort)));
        assert!(matches!(
            parse("http://broker"),
            Err(AddressError::MissingPort)
        ));
        assert!(matches!(parse("a b:7070"), Err(AddressError::Malformed(_))));
    }

    #[test]
    fn every_valid_address_makes_an_endpoint() {
        let address: BrokerAddress = "localhost:7070".parse().expect("valid address");
        assert_eq!(
            address.endpoint(None).expect("plaintext").uri().to_string(),
            "http://localhost:7070/"
        );
        let tls = ClientTlsConfig::new();
        assert_eq!(
            address.endpoint(Some(&tls)).expect("tls").uri().to_string(),
            "https://localhost:7070/"
        );
    }
}
