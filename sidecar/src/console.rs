//! The live console: a static web page served by `ringside serve` at `/` on
//! its gRPC address (`--console`, on by default).
//!
//! The page is built from `console/` (TypeScript, Connect-ES over grpc-web)
//! with npm at development time; the bundle in `console/dist/` is committed
//! and embedded here, so the Rust build needs no Node and the sidecar needs
//! no network. The page talks to the sidecar only through its public API
//! (`Info`, `ListTopics`, `Subscribe` over grpc-web) on the same origin.
//!
//! [`ConsoleLayer`] answers `GET` and `HEAD` requests (which no gRPC or
//! grpc-web call uses) from the embedded assets and passes every other
//! request on to the services untouched. Responses are static bytes: no
//! allocation per request beyond the headers.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

/// The page may load its own script, style and icon, and talk to the
/// sidecar it came from; nothing else (no inline script or style, no
/// framing, no other origin).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
#[derive(Debug)]
struct Asset {
    /// Request path.
    path: &'static str,
    /// `Content-Type`.
    content_type: &'static str,
    /// The bytes.
    body: &'static [u8],
}

const INDEX_HTML: &[u8] = include_bytes!("../../console/dist/index.html");

/// Everything the page loads. `/` and `/index.html` are the same page.
const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: INDEX_HTML,
    },
    Asset {
        path: "/index.html",
        content_type: "text/html; charset=utf-8",
        body: INDEX_HTML,
    },
    Asset {
        path: "/console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/dist/console.js"),
    },
    Asset {
        path: "/console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../console/dist/console.css"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../console/dist/favicon.svg"),
    },
];

/// Strong validators for the assets (xxh3 of the bytes), in [`ASSETS`] order.
fn etags() -> &'static [HeaderValue] {
    static ETAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let tag = format!("\"{:032x}\"", xxhash_rust::xxh3::xxh3_128(a.body));
                HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"0\""))
            })
            .collect()
    })
}

/// The URL a person on this host opens to see the console.
pub fn url(listen: SocketAddr, tls: bool) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}/", SocketAddr::new(ip, listen.port()))
}

/// Serves the console in front of the gRPC services (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct ConsoleLayer {
    enabled: bool,
}

impl ConsoleLayer {
    /// With `enabled = false` every request passes through untouched.
    pub fn new(enabled: bool) -> Self {
        Self { enabled }
    }
}

impl<S> tower::Layer<S> for ConsoleLayer {
    type Service = Console<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Console {
            inner,
            enabled: self.enabled,
        }
    }
}

/// The service of [`ConsoleLayer`].
#[derive(Debug, Clone)]
pub struct Console<S> {
    inner: S,
    enabled: bool,
}

impl<S, B, R> tower::Service<Request<B>> for Console<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: http_body::Body<Data = Bytes> + Send + 'static,
    R::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if self.enabled && (req.method() == Method::GET || req.method() == Method::HEAD) {
            return Box::pin(std::future::ready(Ok(respond(&req))));
        }
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map(|r| r.map(tonic::body::Body::new)) })
    }
}

/// Answers a `GET` or `HEAD` request from the embedded assets.
fn respond<B>(req: &Request<B>) -> Response<tonic::body::Body> {
    let head = req.method() == Method::HEAD;
    let Some(i) = ASSETS.iter().position(|a| a.path == req.uri().path()) else {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: the ringside console is at /\n",
            head,
        );
    };
    let asset = &ASSETS[i];
    let etag = &etags()[i];
    let not_modified = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .any(|v| matches_etag(v.as_bytes(), etag.as_bytes()));
    let (status, body) = if not_modified {
        (StatusCode::NOT_MODIFIED, &[][..])
    } else {
        (StatusCode::OK, asset.body)
    };
    let mut resp = Response::new(body_of(body, head));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(header::ETAG, etag.clone());
    // Revalidate on every load (cheap: 304 by ETag), so a new sidecar
    // version never runs an old page.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(h);
    resp
}

/// True when an `If-None-Match` value names `etag` (or is `*`).
fn matches_etag(if_none_match: &[u8], etag: &[u8]) -> bool {
    if_none_match
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .map(|t| t.strip_prefix(b"W/").unwrap_or(t))
        .any(|t| t == b"*" || t == etag)
}

fn plain(status: StatusCode, text: &'static str, head: bool) -> Response<tonic::body::Body> {
    let mut resp = Response::new(body_of(text.as_bytes(), head));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(h);
    resp
}

fn security_headers(h: &mut http::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
}

fn body_of(bytes: &'static [u8], head: bool) -> tonic::body::Body {
    if head || bytes.is_empty() {
        tonic::body::Body::empty()
    } else {
        tonic::body::Body::new(http_body_util::Full::new(Bytes::from_static(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::convert::Infallible;
    use tower::{Layer, Service};

    /// Stands in for the gRPC router: answers 418 so pass-through shows.
    #[derive(Clone)]
    struct Inner;

    impl Service<Request<()>> for Inner {
        type Response = Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _req: Request<()>) -> Self::Future {
            let mut r = Response::new(tonic::body::Body::empty());
            *r.status_mut() = StatusCode::IM_A_TEAPOT;
            std::future::ready(Ok(r))
        }
    }

    fn request(method: Method, path: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .expect("request")
    }

    async fn call(enabled: bool, req: Request<()>) -> Response<tonic::body::Body> {
        let mut svc = ConsoleLayer::new(enabled).layer(Inner);
        std::future::poll_fn(|cx| svc.poll_ready(cx))
            .await
            .expect("infallible");
        svc.call(req).await.expect("infallible")
    }

    async fn body(resp: Response<tonic::body::Body>) -> Bytes {
        resp.into_body().collect().await.expect("body").to_bytes()
    }

    #[tokio::test]
    async fn serves_the_page_with_type_policy_and_validator() {
        let resp = call(true, request(Method::GET, "/")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let etag = h[header::ETAG].clone();
        let html = body(resp).await;
        assert_eq!(&html[..], INDEX_HTML);
        assert!(
            std::str::from_utf8(&html)
                .expect("utf-8")
                .contains("console.js")
        );

        let mut again = request(Method::GET, "/index.html");
        again.headers_mut().insert(header::IF_NONE_MATCH, etag);
        let resp = call(true, again).await;
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
        assert!(body(resp).await.is_empty());
    }

    #[tokio::test]
    async fn serves_every_asset_with_its_type() {
        for (path, ty) in [
            ("/console.js", "text/javascript; charset=utf-8"),
            ("/console.css", "text/css; charset=utf-8"),
            ("/favicon.svg", "image/svg+xml"),
        ] {
            let resp = call(true, request(Method::GET, path)).await;
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            assert_eq!(resp.headers()[header::CONTENT_TYPE], ty, "{path}");
            let len: usize = resp.headers()[header::CONTENT_LENGTH]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("number");
            assert_eq!(body(resp).await.len(), len, "{path}");
        }
        let head = call(true, request(Method::HEAD, "/console.js")).await;
        assert_eq!(head.status(), StatusCode::OK);
        assert!(body(head).await.is_empty());
    }

    #[tokio::test]
    async fn unknown_paths_are_404_and_calls_pass_through() {
        let resp = call(true, request(Method::GET, "/nope")).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let grpc = call(true, request(Method::POST, "/ringside.v1.Ringside/Info")).await;
        assert_eq!(grpc.status(), StatusCode::IM_A_TEAPOT);
        let off = call(false, request(Method::GET, "/")).await;
        assert_eq!(off.status(), StatusCode::IM_A_TEAPOT);
    }

    #[test]
    fn if_none_match_lists() {
        assert!(matches_etag(b"\"a\", \"b\"", b"\"b\""));
        assert!(matches_etag(b"W/\"b\"", b"\"b\""));
        assert!(matches_etag(b"*", b"\"b\""));
        assert!(!matches_etag(b"\"c\"", b"\"b\""));
    }

    #[test]
    fn url_names_a_reachable_host() {
        let any: SocketAddr = "0.0.0.0:50051".parse().expect("addr");
        assert_eq!(url(any, false), "http://127.0.0.1:50051/");
        let v6: SocketAddr = "[::1]:443".parse().expect("addr");
        assert_eq!(url(v6, true), "https://[::1]:443/");
    }
}
