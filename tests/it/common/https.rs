//! One HTTPS request the way a careful client makes it: trusting one root,
//! checking one name, reading the answer to the end.

use std::io::{Read, Write};

use rustls::pki_types::{CertificateDer, ServerName};

use super::ca::trusting;

/// GET `path` from 127.0.0.1:`port`, trusting only `root` and checking
/// the name `name`: the leaf the server showed, and the body of its 200.
/// Why not, otherwise (the handshake, the connection, another status).
pub fn get(
    root: &CertificateDer<'static>,
    name: &str,
    port: u16,
    path: &str,
) -> Result<(CertificateDer<'static>, String), String> {
    let server = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    let mut conn = rustls::ClientConnection::new(trusting(root), server).unwrap();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    // Some servers (pebble) close without close_notify: what was read is
    // the answer.
    let _ = tls.read_to_string(&mut answer);
    let leaf = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.clone().into_owned());
    match (answer.split_once("\r\n\r\n"), leaf) {
        (Some((head, body)), Some(leaf)) if head.starts_with("HTTP/1.1 200") => {
            Ok((leaf, body.to_owned()))
        }
        _ => Err(format!("answer: {answer:?}")),
    }
}
