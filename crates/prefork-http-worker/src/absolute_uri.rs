//! SimpleHTTP hands handlers absolute request URIs (`http://HOSTNAME:PORT/path`): the
//! authority, made once per worker, and the URI made absolute with it.

use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};

/// `http://HOSTNAME:PORT/path?query` (`https` over TLS), as SimpleHTTP hands requests to
/// handlers. A URI that is already absolute stays as it is.
pub(crate) fn absolute_uri(uri: &Uri, scheme: Scheme, authority: &Authority) -> Uri {
    if uri.scheme().is_some() {
        return uri.clone();
    }
    let mut parts = uri.clone().into_parts();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority.clone());
    parts.path_and_query.get_or_insert_with(|| PathAndQuery::from_static("/"));
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// `HOSTNAME:PORT` (just `HOSTNAME` for port 0: a unix socket) as a URI authority, or `None`
/// (URIs are then left relative) if the host name cannot be one.
pub(crate) fn authority(hostname: &str, port: u16) -> Option<Authority> {
    let text = if port == 0 { hostname.to_owned() } else { format!("{hostname}:{port}") };
    match Authority::try_from(text) {
        Ok(authority) => Some(authority),
        Err(_) => {
            tracing::warn!(hostname, "host name cannot be part of a URI; handlers get relative URIs");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_uris_become_absolute_with_hostname_and_port() {
        let uri: Uri = "/a/b?c=d".parse().unwrap();
        let authority = authority("example.org", 8080).unwrap();
        assert_eq!(absolute_uri(&uri, Scheme::HTTP, &authority).to_string(), "http://example.org:8080/a/b?c=d");
        assert_eq!(absolute_uri(&uri, Scheme::HTTPS, &authority).to_string(), "https://example.org:8080/a/b?c=d");
        let unix = super::authority("example.org", 0).unwrap();
        assert_eq!(absolute_uri(&uri, Scheme::HTTP, &unix).to_string(), "http://example.org/a/b?c=d");
    }

    #[test]
    fn absolute_uris_are_kept() {
        let uri: Uri = "http://other:1/x".parse().unwrap();
        assert_eq!(absolute_uri(&uri, Scheme::HTTP, &authority("example.org", 8080).unwrap()), uri);
    }

    #[test]
    fn a_hostname_that_cannot_be_an_authority_is_refused() {
        assert!(authority("bad host", 80).is_none());
    }
}
