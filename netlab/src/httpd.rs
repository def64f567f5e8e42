//! `netlab serve-http`: the sandbox's stand-in for a web server on the
//! outside (both families), and a server to put in a node. It answers every GET with where
//! it runs and who it saw (so a test can check that only the uplink address
//! reaches it), `GET /ip` with the address alone, and `GET /bytes/N` with N
//! bytes.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{Ipv4Addr, Ipv6Addr, TcpListener, TcpStream},
    time::Duration,
};

use anyhow::{Context as _, Result};

/// Serve on `port` until killed; the greeting names `place` (where it runs).
pub fn serve(port: u16, place: &str) -> Result<()> {
    // Both families on one socket (an IPv4 client is seen as itself, not
    // as its IPv4-mapped IPv6 address); IPv4 alone where IPv6 is off.
    let listener = TcpListener::bind((Ipv6Addr::UNSPECIFIED, port))
        .or_else(|_| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))
        .with_context(|| format!("binding port {port}"))?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let place = place.to_string();
        std::thread::spawn(move || {
            let _ = handle(stream, &place);
        });
    }
    Ok(())
}

fn handle(mut stream: TcpStream, place: &str) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut peer = stream.peer_addr()?;
    peer.set_ip(peer.ip().to_canonical());
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let body: Vec<u8> = if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().unwrap_or(0).min(1 << 30);
        (0..n).map(|i| b'a' + (i % 26) as u8).collect()
    } else if path == "/ip" {
        format!("{}\n", peer.ip()).into_bytes()
    } else {
        format!("hello from netlab serve-http in {place}\nyou are {peer}\n").into_bytes()
    };
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)?;
    Ok(())
}
