//! `inferd probe`: a health check for images without curl (Docker `HEALTHCHECK`, exec probes).
//! It asks the address `serve` would bind, read from the same config with the same overrides,
//! so a container's probe follows `PORT` and `INFERD_HOST` without being told twice.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::cli::ProbeArgs;
use crate::config::Config;

/// The most of the answer's body that is printed; enough for a `not_ready` message.
const BODY_SHOWN: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("{addr}{path}: {message}")]
    Http { addr: SocketAddr, path: &'static str, message: String },
    #[error("{addr}{path}: no answer within {ms} ms")]
    Timeout { addr: SocketAddr, path: &'static str, ms: u64 },
}

/// What one probe saw: the status and the start of the body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Runs `inferd probe`: one line on stdout (200) or stderr (anything else), and the exit code
/// health checks read: 0 on 200, 1 on any other answer or none, 2 for a config that cannot load.
pub async fn run(args: &ProbeArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    let mut serve = args.serve.clone();
    serve.overrides.host = args.host.or(serve.overrides.host);
    serve.overrides.port = args.port.or(serve.overrides.port);
    let config = match Config::load(&serve) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("inferd probe: {e}");
            return ExitCode::from(2);
        }
    };
    let path = if args.ready { "/ready" } else { "/health" };
    let addr = target(&config);
    match get(addr, path, Duration::from_millis(args.timeout_ms)).await {
        Ok(answer) if answer.status == 200 => {
            crate::stdout::print(&format!("inferd probe: {addr}{path}: 200 {}\n", answer.body));
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            eprintln!("inferd probe: {addr}{path}: {} {}", answer.status, answer.body);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("inferd probe: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Where a client on this host reaches a server bound to `host:port`: a wildcard bind is
/// reached on loopback.
pub fn target(config: &Config) -> SocketAddr {
    let host = match config.server.host {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    SocketAddr::new(host, config.server.port)
}

/// One `GET` on `path` with HTTP/1.1, the whole exchange bounded by `timeout`.
pub async fn get(addr: SocketAddr, path: &'static str, timeout: Duration) -> Result<Answer, ProbeError> {
    let ms = timeout.as_millis() as u64;
    tokio::time::timeout(timeout, exchange(addr, path)).await.map_err(|_| ProbeError::Timeout { addr, path, ms })?
}

async fn exchange(addr: SocketAddr, path: &'static str) -> Result<Answer, ProbeError> {
    let http = |e: &dyn std::fmt::Display| ProbeError::Http { addr, path, message: e.to_string() };
    let stream = TcpStream::connect(addr).await.map_err(|source| ProbeError::Connect { addr, source })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| http(&e))?;
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::USER_AGENT, concat!("inferd-probe/", env!("CARGO_PKG_VERSION")))
        .body(String::new())
        .map_err(|e| http(&e))?;
    let response = sender.send_request(request).await.map_err(|e| http(&e))?;
    let status = response.status().as_u16();
    let body =
        axum::body::to_bytes(axum::body::Body::new(response.into_body()), 64 * 1024).await.map_err(|e| http(&e))?;
    let shown = &body[..body.len().min(BODY_SHOWN)];
    Ok(Answer { status, body: String::from_utf8_lossy(shown).trim().to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(host: &str) -> Config {
        let text = format!(
            "[server]\nhost = \"{host}\"\nport = 9123\n[[models]]\nname = \"m\"\npath = \"house_price.onnx\"\n"
        );
        Config::from_toml(&text, &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models")).unwrap()
    }

    #[test]
    fn a_wildcard_bind_is_probed_on_loopback() {
        assert_eq!(target(&config("0.0.0.0")), "127.0.0.1:9123".parse().unwrap());
        assert_eq!(target(&config("::")), "[::1]:9123".parse().unwrap());
        assert_eq!(target(&config("10.1.2.3")), "10.1.2.3:9123".parse().unwrap());
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let error = get(addr, "/health", Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(error, ProbeError::Connect { .. }), "{error}");
    }
}
