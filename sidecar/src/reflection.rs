//! gRPC server reflection (`grpc.reflection.v1` and `grpc.reflection.v1alpha`), for
//! grpcurl, grpcui, Postman and the like.
//!
//! Each request on the bidirectional stream gets exactly one response, in order. A
//! request that cannot be answered (an unknown symbol or file, extensions) gets an
//! in-stream `ErrorResponse` (NOT_FOUND, INVALID_ARGUMENT) as the reflection protocol
//! specifies, and the stream goes on; only the client closing its side (or a transport
//! error) ends it. Responses are made when the client reads them: one request in, one
//! response out, nothing queued.
//!
//! Known files: `ringside/v1/ringside.proto`, `grpc/health/v1/health.proto` and the two
//! reflection protos. A file is sent with the files it imports (transitively).
//!
//! With `--auth-token-file`, reflection requires the bearer token like the Ringside
//! service itself (it is wrapped in the same interceptor in `serve`); health does not.

use prost::Message;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet};
use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tonic_reflection::pb::{v1, v1alpha};

use v1::server_reflection_request::MessageRequest;
use v1::server_reflection_response::MessageResponse;

/// What reflection knows: files, the symbols they define, the services.
#[derive(Debug, Default)]
pub struct Index {
    /// Service names, sorted.
    services: BTreeSet<String>,
    /// File name to its descriptor.
    files: HashMap<String, FileDescriptorProto>,
    /// Fully qualified symbol (no leading dot) to the file defining it.
    symbols: HashMap<String, String>,
    /// Fully qualified message names (for extension-number requests).
    messages: BTreeSet<String>,
}

impl Index {
    /// The index of these encoded `FileDescriptorSet`s.
    ///
    /// # Errors
    ///
    /// A set that does not decode as a `google.protobuf.FileDescriptorSet`.
    pub fn new(sets: &[&[u8]]) -> Result<Index, prost::DecodeError> {
        let mut index = Index::default();
        for set in sets {
            for file in FileDescriptorSet::decode(*set)?.file {
                index.add_file(file);
            }
        }
        Ok(index)
    }

    /// The index of everything this sidecar serves.
    ///
    /// # Errors
    ///
    /// One of the built-in descriptor sets does not decode (a build problem).
    pub fn sidecar() -> Result<Index, prost::DecodeError> {
        Index::new(&[
            ringside_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            v1::FILE_DESCRIPTOR_SET,
            v1alpha::FILE_DESCRIPTOR_SET,
        ])
    }

    fn add_file(&mut self, file: FileDescriptorProto) {
        let Some(name) = file.name.clone() else {
            return;
        };
        let package = file.package.clone().unwrap_or_default();
        for message in &file.message_type {
            self.add_message(&name, &package, message);
        }
        for e in &file.enum_type {
            self.add_enum(&name, &package, e);
        }
        for service in &file.service {
            let service_name = qualify(&package, service.name.as_deref().unwrap_or(""));
            for method in &service.method {
                let m = qualify(&service_name, method.name.as_deref().unwrap_or(""));
                self.symbols.insert(m, name.clone());
            }
            self.symbols.insert(service_name.clone(), name.clone());
            self.services.insert(service_name);
        }
        self.files.entry(name).or_insert(file);
    }

    fn add_message(&mut self, file: &str, scope: &str, message: &DescriptorProto) {
        let full = qualify(scope, message.name.as_deref().unwrap_or(""));
        for field in &message.field {
            let f = qualify(&full, field.name.as_deref().unwrap_or(""));
            self.symbols.insert(f, file.to_owned());
        }
        for oneof in &message.oneof_decl {
            let o = qualify(&full, oneof.name.as_deref().unwrap_or(""));
            self.symbols.insert(o, file.to_owned());
        }
        for nested in &message.nested_type {
            self.add_message(file, &full, nested);
        }
        for e in &message.enum_type {
            self.add_enum(file, &full, e);
        }
        self.messages.insert(full.clone());
        self.symbols.insert(full, file.to_owned());
    }

    fn add_enum(&mut self, file: &str, scope: &str, e: &EnumDescriptorProto) {
        let full = qualify(scope, e.name.as_deref().unwrap_or(""));
        for value in &e.value {
            // Enum values are scoped like their enum's siblings (protobuf's C++ rule).
            let v = qualify(scope, value.name.as_deref().unwrap_or(""));
            self.symbols.insert(v, file.to_owned());
        }
        self.symbols.insert(full, file.to_owned());
    }

    /// The encoded file `name` and every file it imports, transitively (the file first).
    fn file_with_deps(&self, name: &str) -> Option<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let mut todo = vec![name.to_owned()];
        while let Some(next) = todo.pop() {
            if !seen.insert(next.clone()) {
                continue;
            }
            // The requested file must exist; an import we do not know is left out.
            let Some(file) = self.files.get(&next) else {
                if next == name {
                    return None;
                }
                continue;
            };
            out.push(file.encode_to_vec());
            todo.extend(file.dependency.iter().cloned());
        }
        Some(out)
    }

    /// The answer to one request.
    pub fn answer(&self, request: v1::ServerReflectionRequest) -> v1::ServerReflectionResponse {
        let message_response = match &request.message_request {
            None => error(
                tonic::Code::InvalidArgument,
                "empty reflection request: set one of file_by_filename, file_containing_symbol, file_containing_extension, all_extension_numbers_of_type, list_services".into(),
            ),
            Some(MessageRequest::ListServices(_)) => {
                MessageResponse::ListServicesResponse(v1::ListServiceResponse {
                    service: self
                        .services
                        .iter()
                        .map(|name| v1::ServiceResponse { name: name.clone() })
                        .collect(),
                })
            }
            Some(MessageRequest::FileByFilename(name)) => match self.file_with_deps(name) {
                Some(files) => file_response(files),
                None => error(
                    tonic::Code::NotFound,
                    format!("file {name:?} is not known here; list_services, then ask for a symbol"),
                ),
            },
            Some(MessageRequest::FileContainingSymbol(symbol)) => {
                let symbol = symbol.trim_start_matches('.');
                match self
                    .symbols
                    .get(symbol)
                    .and_then(|file| self.file_with_deps(file))
                {
                    Some(files) => file_response(files),
                    None => error(
                        tonic::Code::NotFound,
                        format!("symbol {symbol:?} is not known here; list_services names the services"),
                    ),
                }
            }
            Some(MessageRequest::FileContainingExtension(ext)) => error(
                tonic::Code::NotFound,
                format!(
                    "no extension {} of {:?}: the APIs served here define no extensions",
                    ext.extension_number, ext.containing_type
                ),
            ),
            Some(MessageRequest::AllExtensionNumbersOfType(name)) => {
                let name = name.trim_start_matches('.');
                if self.messages.contains(name) {
                    MessageResponse::AllExtensionNumbersResponse(v1::ExtensionNumberResponse {
                        base_type_name: name.to_owned(),
                        extension_number: Vec::new(),
                    })
                } else {
                    error(
                        tonic::Code::NotFound,
                        format!("message type {name:?} is not known here"),
                    )
                }
            }
        };
        v1::ServerReflectionResponse {
            valid_host: request.host.clone(),
            original_request: Some(request),
            message_response: Some(message_response),
        }
    }
}

fn qualify(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}.{name}")
    }
}

fn file_response(files: Vec<Vec<u8>>) -> MessageResponse {
    MessageResponse::FileDescriptorResponse(v1::FileDescriptorResponse {
        file_descriptor_proto: files,
    })
}

fn error(code: tonic::Code, message: String) -> MessageResponse {
    MessageResponse::ErrorResponse(v1::ErrorResponse {
        error_code: code as i32,
        error_message: message,
    })
}

/// The reflection service (both versions share one [`Index`]).
#[derive(Debug, Clone)]
pub struct Reflection {
    index: Arc<Index>,
}

impl Reflection {
    /// The service over `index`.
    pub fn new(index: Arc<Index>) -> Self {
        Self { index }
    }
}

/// One response per request, made when the client reads: a reflection stream.
pub struct ReflectionStream<Req> {
    requests: Streaming<Req>,
    index: Arc<Index>,
}

impl<Req> std::fmt::Debug for ReflectionStream<Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReflectionStream").finish_non_exhaustive()
    }
}

/// A request and response of one protocol version, answered through the v1 types
/// (the v1alpha messages have the same fields and numbers).
pub trait Version: Message + Default + Send + 'static {
    /// The response type of this version.
    type Response: Message + Default + Send + 'static;
    /// Answers `self` from `index`.
    ///
    /// # Errors
    ///
    /// The message could not be converted between the two versions' types.
    fn answer(self, index: &Index) -> Result<Self::Response, Status>;
}

/// Re-encodes a message as another type with the same wire format.
fn convert<A: Message, B: Message + Default>(a: &A) -> Result<B, Status> {
    B::decode(a.encode_to_vec().as_slice())
        .map_err(|e| Status::internal(format!("reflection message conversion failed: {e}")))
}

impl Version for v1::ServerReflectionRequest {
    type Response = v1::ServerReflectionResponse;
    fn answer(self, index: &Index) -> Result<Self::Response, Status> {
        Ok(index.answer(self))
    }
}

impl Version for v1alpha::ServerReflectionRequest {
    type Response = v1alpha::ServerReflectionResponse;
    fn answer(self, index: &Index) -> Result<Self::Response, Status> {
        let request: v1::ServerReflectionRequest = convert(&self)?;
        convert(&index.answer(request))
    }
}

impl<Req: Version> Stream for ReflectionStream<Req> {
    type Item = Result<Req::Response, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.requests).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(status))) => Poll::Ready(Some(Err(status))),
            Poll::Ready(Some(Ok(request))) => Poll::Ready(Some(request.answer(&this.index))),
        }
    }
}

#[tonic::async_trait]
impl v1::server_reflection_server::ServerReflection for Reflection {
    type ServerReflectionInfoStream = ReflectionStream<v1::ServerReflectionRequest>;

    async fn server_reflection_info(
        &self,
        request: Request<Streaming<v1::ServerReflectionRequest>>,
    ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
        Ok(Response::new(ReflectionStream {
            requests: request.into_inner(),
            index: Arc::clone(&self.index),
        }))
    }
}

#[tonic::async_trait]
impl v1alpha::server_reflection_server::ServerReflection for Reflection {
    type ServerReflectionInfoStream = ReflectionStream<v1alpha::ServerReflectionRequest>;

    async fn server_reflection_info(
        &self,
        request: Request<Streaming<v1alpha::ServerReflectionRequest>>,
    ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
        Ok(Response::new(ReflectionStream {
            requests: request.into_inner(),
            index: Arc::clone(&self.index),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(index: &Index, request: MessageRequest) -> MessageResponse {
        index
            .answer(v1::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(request),
            })
            .message_response
            .expect("a response")
    }

    #[test]
    fn answers_known_and_unknown_symbols_in_stream() {
        let index = Index::sidecar().expect("descriptor sets decode");
        let MessageResponse::ListServicesResponse(list) =
            ask(&index, MessageRequest::ListServices(String::new()))
        else {
            panic!("list_services answered with something else");
        };
        let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
        for want in [
            "ringside.v1.Ringside",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        for symbol in [
            "ringside.v1.Ringside",
            "ringside.v1.Ringside.Subscribe",
            "ringside.v1.Batch",
            ".ringside.v1.Batch.resume_seq",
            "ringside.v1.LossReason",
            "ringside.v1.LOSS_REASON_LAPPED",
            "ringside.v1.SubscribeRequest.start",
        ] {
            let MessageResponse::FileDescriptorResponse(files) =
                ask(&index, MessageRequest::FileContainingSymbol(symbol.into()))
            else {
                panic!("{symbol}: no file");
            };
            let file = FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice())
                .expect("a file descriptor");
            assert_eq!(file.name.as_deref(), Some("ringside/v1/ringside.proto"));
        }
        let MessageResponse::ErrorResponse(e) = ask(
            &index,
            MessageRequest::FileContainingSymbol("no.such.Thing".into()),
        ) else {
            panic!("an unknown symbol must get an error response");
        };
        assert_eq!(e.error_code, tonic::Code::NotFound as i32);
        assert!(matches!(
            ask(&index, MessageRequest::FileByFilename("nope.proto".into())),
            MessageResponse::ErrorResponse(_)
        ));
        assert!(matches!(
            ask(
                &index,
                MessageRequest::AllExtensionNumbersOfType("ringside.v1.Batch".into())
            ),
            MessageResponse::AllExtensionNumbersResponse(_)
        ));
    }

    #[test]
    fn v1alpha_converts_both_ways() {
        let index = Index::sidecar().expect("descriptor sets decode");
        let request = v1alpha::ServerReflectionRequest {
            host: "h".into(),
            message_request: Some(
                v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "nope".into(),
                ),
            ),
        };
        let response = Version::answer(request, &index).expect("converts");
        assert!(matches!(
            response.message_response,
            Some(v1alpha::server_reflection_response::MessageResponse::ErrorResponse(_))
        ));
        assert_eq!(response.valid_host, "h");
    }
}
