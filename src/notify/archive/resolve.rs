//! The name resolution an archive's downloads connect through: a host on
//! Replicate's delivery domain is connected to only if every address it
//! resolves to is public ([`source::public`]), checked on the very
//! addresses the connection then uses, so a name that answers a public
//! address to a check and a private one to the connection (DNS
//! rebinding) gains nothing. A host listed in `allow_hosts` is resolved as
//! listed; any other host is not resolved at all.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

use super::source::{self, Refused, Trust};

/// How a name becomes addresses: the system's resolver, or a test's.
pub type Lookup = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>
        + Send
        + Sync,
>;

/// A resolver for `hyper_util`'s `HttpConnector` that refuses what
/// [`source`] refuses.
#[derive(Clone)]
pub struct Guarded {
    allow_hosts: Arc<[String]>,
    lookup: Lookup,
}

impl Guarded {
    /// Resolving with the system's resolver.
    pub fn new(allow_hosts: &[String]) -> Self {
        Self::with_lookup(
            allow_hosts,
            Arc::new(|host: String| {
                Box::pin(async move {
                    let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
                    Ok(found.map(|a| a.ip()).collect())
                })
            }),
        )
    }

    /// Resolving with `lookup`.
    pub fn with_lookup(allow_hosts: &[String], lookup: Lookup) -> Self {
        Guarded {
            allow_hosts: allow_hosts.into(),
            lookup,
        }
    }

    /// The addresses to connect to for `host`, or why there are none.
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        // The scheme was checked with the URL; here only the host matters.
        let trust = source::allowed(&format!("https://{host}/"), &self.allow_hosts)
            .map_err(ResolveError::Refused)?;
        let addresses = (self.lookup)(host.to_owned())
            .await
            .map_err(ResolveError::Lookup)?;
        if trust == Trust::Replicate {
            source::public(host, &addresses).map_err(ResolveError::Refused)?;
        }
        Ok(addresses)
    }
}

/// Why a host was not resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Refused(Refused),
    #[error("cannot resolve the host: {0}")]
    Lookup(std::io::Error),
}

impl tower_service::Service<Name> for Guarded {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ResolveError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ResolveError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ResolveError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let addresses = this.resolve(name.as_str()).await?;
            // The port is the connector's to set.
            let with_port: Vec<SocketAddr> = addresses
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            Ok(with_port.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lookup answering `answers` for every name.
    fn answering(answers: &'static [&'static str]) -> Lookup {
        Arc::new(move |_host| {
            Box::pin(async move { Ok(answers.iter().map(|a| a.parse().unwrap()).collect()) })
        })
    }

    #[tokio::test]
    async fn replicates_hosts_resolve_only_to_public_addresses() {
        let listed = vec!["mirror.internal".to_owned()];
        let public = Guarded::with_lookup(&listed, answering(&["34.117.59.81"]));
        assert_eq!(
            public.resolve("pbxt.replicate.delivery").await.unwrap(),
            ["34.117.59.81".parse::<IpAddr>().unwrap()]
        );
        // Rebound to the metadata service, or one private address among public ones.
        for answers in [&["169.254.169.254"][..], &["34.117.59.81", "10.0.0.7"][..]] {
            let rebound = Guarded::with_lookup(&listed, answering(answers));
            let e = rebound
                .resolve("pbxt.replicate.delivery")
                .await
                .unwrap_err();
            assert!(e.to_string().contains("not a public address"), "{e}");
        }
        // A listed host is trusted as listed.
        let inside = Guarded::with_lookup(&listed, answering(&["10.0.0.7"]));
        assert_eq!(inside.resolve("mirror.internal").await.unwrap().len(), 1);
        // Any other host is never looked up.
        let never: Lookup = Arc::new(|host| panic!("looked up {host}"));
        let other = Guarded::with_lookup(&listed, never);
        let e = other.resolve("attacker.example").await.unwrap_err();
        assert!(e.to_string().contains("not one of Replicate's"), "{e}");
    }

    #[tokio::test]
    async fn a_connection_to_a_rebound_name_is_never_made() {
        use hyper_util::client::legacy::Client;
        use hyper_util::client::legacy::connect::HttpConnector;
        // Something listening on loopback that must not be reached.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let reached = tokio::spawn(async move { listener.accept().await.is_ok() });
        let resolver = Guarded::with_lookup(&[], answering(&["127.0.0.1"]));
        let client: Client<_, String> = Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(HttpConnector::new_with_resolver(resolver));
        let uri: hyper::Uri = format!("http://files.replicate.delivery:{port}/x")
            .parse()
            .unwrap();
        let e = client.get(uri).await.unwrap_err();
        let chain = format!("{:?}", e);
        assert!(chain.contains("NotPublic"), "{chain}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!reached.is_finished(), "a connection was made");
        reached.abort();
    }
}
