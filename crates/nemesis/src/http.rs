//! HTTP/1.1 by hand, one request per connection.
//!
//! A fresh connection per request (`Connection: close`) so that a killed or paused server
//! shows up in the very request that met it, and so that the one question the recorder
//! must answer honestly — could this request have reached the server? — has a clear
//! answer: if the TCP connection never opened, nothing was sent.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A parsed reply.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    /// The `Location` header, if any (where a 307 `not_leader` sends the request on).
    pub location: Option<String>,
}

impl Reply {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// The stable error code of a JSON error body (`{"error":{"code":..}}`).
    pub fn error_code(&self) -> Option<String> {
        Some(self.json()?.get("error")?.get("code")?.as_str()?.to_string())
    }

    pub fn error_message(&self) -> String {
        self.json()
            .and_then(|j| j.get("error")?.get("message")?.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// What became of a request.
#[derive(Clone, Debug)]
pub enum Sent {
    /// The server answered.
    Reply(Reply),
    /// The connection never opened: the server cannot have seen the request.
    NotSent(String),
    /// Something failed after the connection opened (timeout, reset): the server may
    /// have received the request and may still act on it.
    Unknown(String),
}

/// One request on a fresh connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<&str>,
    connect_timeout: Duration,
    timeout: Duration,
) -> Sent {
    let mut stream = match TcpStream::connect_timeout(&addr, connect_timeout) {
        Ok(stream) => stream,
        Err(e) => return Sent::NotSent(e.to_string()),
    };
    match exchange(&mut stream, addr, method, path, headers, body, timeout) {
        Ok(reply) => Sent::Reply(reply),
        Err(e) => Sent::Unknown(e.to_string()),
    }
}

fn exchange(
    stream: &mut TcpStream,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<&str>,
    timeout: Duration,
) -> io::Result<Reply> {
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let body = body.unwrap_or("");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(body);
    stream.write_all(head.as_bytes())?;
    // The read timeout applies per read call; bound the whole reply too.
    let deadline = std::time::Instant::now() + timeout;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if std::time::Instant::now() > deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "reply too slow"));
        }
    }
    parse_reply(&raw).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad HTTP reply"))
}

fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut chunked = false;
    let mut location = None;
    for line in lines {
        let lower = line.to_ascii_lowercase();
        chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
        if lower.starts_with("location:") {
            location = Some(line["location:".len()..].trim().to_string());
        }
    }
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body)?;
    }
    Some(Reply { status, body: String::from_utf8_lossy(&body).into_owned(), location })
}

/// Decodes an HTTP/1.1 chunked body (`None` if malformed). Also used by the CLI's test
/// harness, which speaks the same minimal HTTP.
pub fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_and_plain_replies_parse() {
        let plain = parse_reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi").unwrap();
        assert_eq!((plain.status, plain.body.as_str()), (200, "hi"));
        let chunked = parse_reply(
            b"HTTP/1.1 503 X\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((chunked.status, chunked.body.as_str()), (503, "abc"));
    }
}
