//! A lean HTTP/1.1 client: one keep-alive connection per client task, over a plain
//! `tokio::net::TcpStream`, reconnecting only after an error or a server-side close.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Where the server is: a loopback address only.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: HeaderValue,
}

impl Target {
    /// Parses `http://127.0.0.1:PORT` (also `localhost` and `[::1]`); refuses any other host,
    /// so the load generator can never be pointed at someone else's machine.
    pub fn parse(url: &str) -> Result<Self, BoxError> {
        let uri: Uri = url.parse()?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("--url must be http://127.0.0.1:PORT, got {url}").into());
        }
        let host = uri.host().ok_or("--url has no host")?;
        let ip = match host {
            "127.0.0.1" | "localhost" => "127.0.0.1",
            "[::1]" | "::1" => "[::1]",
            other => {
                return Err(format!(
                    "--url host must be 127.0.0.1, localhost or [::1] (loopback only), got {other}"
                )
                .into());
            }
        };
        let port = uri.port_u16().unwrap_or(80);
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err("--url must not have a path".into());
        }
        let addr: SocketAddr = format!("{ip}:{port}").parse()?;
        let host = HeaderValue::from_str(&format!("{ip}:{port}"))?;
        Ok(Self { addr, host })
    }
}

/// One keep-alive connection and the headers every request carries.
pub struct Client {
    target: Target,
    auth: Option<HeaderValue>,
    timeout: Duration,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// Connections opened, the first included.
    pub connects: u64,
}

/// A response: status and the whole body (read fully so the connection can be reused).
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Client {
    pub fn new(target: Target, bearer: Option<&str>, timeout: Duration) -> Result<Self, BoxError> {
        let auth = bearer
            .map(|key| HeaderValue::from_str(&format!("Bearer {key}")))
            .transpose()?;
        Ok(Self {
            target,
            auth,
            timeout,
            sender: None,
            connects: 0,
        })
    }

    async fn connect(&mut self) -> Result<(), BoxError> {
        let stream = TcpStream::connect(self.target.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // The connection task ends by itself when the sender is dropped or the peer closes.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        self.sender = Some(sender);
        self.connects += 1;
        Ok(())
    }

    /// Sends one request and reads the whole answer, within the per-request timeout. On any
    /// error the connection is dropped and the next request opens a new one.
    pub async fn send(
        &mut self,
        method: Method,
        uri: Uri,
        body: Option<Bytes>,
        extra: Option<(&'static str, HeaderValue)>,
    ) -> Result<Reply, BoxError> {
        let timeout = self.timeout;
        let exchange = async {
            if self.sender.as_ref().is_none_or(|sender| sender.is_closed()) {
                self.connect().await?;
            }
            let sender = self.sender.as_mut().ok_or("no connection")?;
            sender.ready().await?;
            let mut request = Request::builder()
                .method(method)
                .uri(uri)
                .header(HOST, self.target.host.clone());
            if let Some(auth) = &self.auth {
                request = request.header(AUTHORIZATION, auth.clone());
            }
            if body.is_some() {
                request =
                    request.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            if let Some((name, value)) = extra {
                request = request.header(name, value);
            }
            let request = request.body(Full::new(body.unwrap_or_default()))?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, BoxError>(Reply { status, body })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(error)) => {
                self.sender = None;
                Err(error)
            }
            Err(_) => {
                self.sender = None;
                Err(format!("no answer within {timeout:?}").into())
            }
        }
    }

    pub async fn get(&mut self, uri: Uri) -> Result<Reply, BoxError> {
        self.send(Method::GET, uri, None, None).await
    }

    pub async fn post(&mut self, uri: Uri, body: Bytes) -> Result<Reply, BoxError> {
        self.send(Method::POST, uri, Some(body), None).await
    }
}
