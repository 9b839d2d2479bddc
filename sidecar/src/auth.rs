//! Bearer-token authentication for remote subscribers.
//!
//! With `--auth-token-file`, every call except gRPC health checks must carry
//! `authorization: Bearer <token>`; otherwise it ends with UNAUTHENTICATED.
//! The comparison takes time independent of where the tokens differ.

use http::HeaderMap;
use std::path::Path;
use std::sync::Arc;
use thiserror::Error;
use tonic::Status;

/// The token file could not be used.
#[derive(Debug, Error)]
pub enum TokenFileError {
    /// Reading failed.
    #[error("cannot read --auth-token-file {path}: {source}; check the path and its permissions")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It holds no token.
    #[error("--auth-token-file {path} is empty; put the token (one line, no spaces) in it")]
    Empty {
        /// The file.
        path: String,
    },
}

/// Checks bearer tokens. `None` token = authentication off.
#[derive(Debug, Clone, Default)]
pub struct TokenCheck {
    token: Option<Arc<[u8]>>,
}

impl TokenCheck {
    /// No authentication.
    pub fn off() -> Self {
        Self { token: None }
    }

    /// Loads the token (first line, trimmed) from a file.
    ///
    /// # Errors
    ///
    /// [`TokenFileError`] when the file cannot be read, is empty, or holds a token that is not
    /// printable ASCII.
    pub fn from_file(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let token = text.lines().next().unwrap_or("").trim();
        if token.is_empty() {
            return Err(TokenFileError::Empty {
                path: path.display().to_string(),
            });
        }
        Ok(Self {
            token: Some(Arc::from(token.as_bytes())),
        })
    }

    /// True when a token is required.
    pub fn enabled(&self) -> bool {
        self.token.is_some()
    }

    /// Accepts the call or says why not.
    ///
    /// # Errors
    ///
    /// `UNAUTHENTICATED` when a token is configured and the request carries none, or another
    /// one.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Status> {
        let Some(want) = &self.token else {
            return Ok(());
        };
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(Status::unauthenticated(
                "missing `authorization: Bearer <token>` metadata; this sidecar requires a token (--auth-token-file)",
            ));
        };
        let got = value.as_bytes();
        let got = got
            .strip_prefix(b"Bearer ")
            .or_else(|| got.strip_prefix(b"bearer "))
            .unwrap_or(b"");
        if constant_time_eq(got, want) {
            Ok(())
        } else {
            Err(Status::unauthenticated("invalid bearer token"))
        }
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let headers = req.metadata().clone().into_headers();
        self.check(&headers)?;
        Ok(req)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for (i, want) in b.iter().enumerate() {
        diff |= a.get(i).copied().unwrap_or(0) ^ want;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_tokens() {
        let t = TokenCheck {
            token: Some(Arc::from(&b"s3cret"[..])),
        };
        let mut h = HeaderMap::new();
        assert_eq!(
            t.check(&h).expect_err("must fail").code(),
            tonic::Code::Unauthenticated
        );
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer nope".parse().expect("header"),
        );
        assert_eq!(
            t.check(&h).expect_err("must fail").code(),
            tonic::Code::Unauthenticated
        );
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer s3cret".parse().expect("header"),
        );
        assert!(t.check(&h).is_ok());
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer s3cret2".parse().expect("header"),
        );
        assert!(t.check(&h).is_err());
        assert!(TokenCheck::off().check(&HeaderMap::new()).is_ok());
    }
}
