//! A bare HTTP/1.1 exchange over any stream (plain TCP or TLS), for the dashboard listener's
//! tests: one request with `Connection: close`, the whole answer read back.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// One answer: the status code, the lower-cased headers and the body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The value of header `name` (lower case), or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).unwrap_or_default()
    }

    /// The `grpc-status` of a gRPC-Web answer: from the headers (a trailers-only answer) or
    /// from the trailer frame (flag 0x80) at the end of the body.
    pub fn grpc_status(&self) -> Option<u32> {
        if let Ok(code) = self.header("grpc-status").parse() {
            return Some(code);
        }
        let mut rest = self.body.as_slice();
        while rest.len() >= 5 {
            let length = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            let frame = rest.get(5..5 + length)?;
            if rest[0] & 0x80 != 0 {
                let text = String::from_utf8_lossy(frame).to_string();
                return text.lines().find_map(|line| {
                    line.strip_prefix("grpc-status:").and_then(|v| v.trim().parse().ok())
                });
            }
            rest = &rest[5 + length..];
        }
        None
    }
}

/// Sends `method path` with `headers` and `body` to `authority` over `stream`.
pub async fn exchange(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    authority: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    // A TLS peer may close without close_notify once it has answered; what was read counts.
    let _ = stream.read_to_end(&mut raw).await;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("a complete answer, got {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines.next().and_then(|line| line.split(' ').nth(1)).and_then(|s| s.parse().ok());
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let body = dechunk(&headers, &raw[split + 4..]);
    Answer { status: status.expect("a status line"), headers, body }
}

/// The body of a `Transfer-Encoding: chunked` answer without its chunk framing.
fn dechunk(headers: &[(String, String)], raw: &[u8]) -> Vec<u8> {
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    if !chunked {
        return raw.to_vec();
    }
    let mut body = Vec::new();
    let mut rest = raw;
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&rest[..end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        body.extend_from_slice(&rest[end + 2..end + 2 + size]);
        rest = &rest[end + 2 + size + 2..];
    }
    body
}
