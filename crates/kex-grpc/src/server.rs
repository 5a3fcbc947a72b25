//! The responder side: a tonic `KeyExchange` service that runs one handshake per stream.
//! It reads the init, lets the state machine answer, installs the inbound SA *before* sending
//! the response, then waits (bounded by the step timeout) for the confirm and switches the
//! outbound SA. Every refusal ends the stream with a status; none panics.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use cipherlane_kex::{Action, Endpoint, Responder, SaInstaller};
use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

use crate::proto::key_exchange_server::{KeyExchange, KeyExchangeServer};
use crate::proto::Frame;
use crate::status::to_status;
use crate::MAX_GRPC_MESSAGE;

/// The service, generic over the datapath seam.
pub struct KexService<I> {
    endpoint: Arc<Endpoint>,
    installer: Arc<I>,
}

impl<I: SaInstaller> KexService<I> {
    pub fn new(endpoint: Arc<Endpoint>, installer: Arc<I>) -> KexService<I> {
        KexService {
            endpoint,
            installer,
        }
    }

    /// The tonic server for this service, with message size limits set.
    pub fn into_server(self) -> KeyExchangeServer<KexService<I>> {
        KeyExchangeServer::new(self)
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE)
    }
}

/// Serves the key exchange on `listener` until `shutdown` completes.
pub async fn serve<I: SaInstaller>(
    listener: TcpListener,
    endpoint: Arc<Endpoint>,
    installer: Arc<I>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(KexService::new(endpoint, installer).into_server())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<Frame, Status>> + Send + 'static>>;

enum Step<I> {
    AwaitInit {
        inbound: Streaming<Frame>,
        endpoint: Arc<Endpoint>,
        installer: Arc<I>,
    },
    AwaitConfirm {
        inbound: Streaming<Frame>,
        endpoint: Arc<Endpoint>,
        installer: Arc<I>,
        responder: Box<Responder>,
    },
    Done,
}

async fn next_frame(
    inbound: &mut Streaming<Frame>,
    endpoint: &Endpoint,
    what: &str,
) -> Result<Option<Frame>, Status> {
    match tokio::time::timeout(endpoint.config().step_timeout, inbound.message()).await {
        Ok(Ok(frame)) => Ok(frame),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "timeout: no {what} within {:?}",
            endpoint.config().step_timeout
        ))),
    }
}

async fn on_init<I: SaInstaller>(
    mut inbound: Streaming<Frame>,
    endpoint: Arc<Endpoint>,
    installer: Arc<I>,
) -> Result<(Frame, Step<I>), Status> {
    let frame = next_frame(&mut inbound, &endpoint, "init")
        .await?
        .ok_or_else(|| Status::invalid_argument("malformed: stream ended before the init"))?;
    let (responder, actions) = endpoint
        .respond(&frame.message)
        .map_err(|e| to_status(&e))?;
    let mut reply = None;
    for action in actions {
        match action {
            Action::InstallInbound { peer, epoch, sa } => installer
                .install_inbound(&peer, epoch, &sa)
                .await
                .map_err(|e| Status::internal(format!("internal: {e}")))?,
            Action::Send(message) => reply = Some(Frame { message }),
            other => {
                return Err(Status::internal(format!(
                    "internal: unexpected responder action {other:?}"
                )))
            }
        }
    }
    let reply =
        reply.ok_or_else(|| Status::internal("internal: the responder produced no response"))?;
    Ok((
        reply,
        Step::AwaitConfirm {
            inbound,
            endpoint,
            installer,
            responder: Box::new(responder),
        },
    ))
}

async fn on_confirm<I: SaInstaller>(
    mut inbound: Streaming<Frame>,
    endpoint: Arc<Endpoint>,
    installer: Arc<I>,
    responder: Box<Responder>,
) -> Result<(), Status> {
    let frame = match next_frame(&mut inbound, &endpoint, "confirm").await {
        Ok(Some(frame)) => frame,
        Ok(None) | Err(_) => {
            // The outbound SA stays the old one; the new inbound SA stays (the initiator may
            // already use it) until a later handshake replaces it.
            let err = (*responder).abandon(&endpoint);
            return Err(to_status(&err));
        }
    };
    let actions = (*responder)
        .on_confirm(&endpoint, &frame.message)
        .map_err(|e| to_status(&e))?;
    for action in actions {
        match action {
            Action::SwitchOutbound { peer, epoch, sa } => installer
                .switch_outbound(&peer, epoch, &sa)
                .await
                .map_err(|e| Status::internal(format!("internal: {e}")))?,
            Action::Established { peer, pair } => installer
                .established(&peer, &pair)
                .await
                .map_err(|e| Status::internal(format!("internal: {e}")))?,
            other => {
                return Err(Status::internal(format!(
                    "internal: unexpected responder action {other:?}"
                )))
            }
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl<I: SaInstaller> KeyExchange for KexService<I> {
    type HandshakeStream = FrameStream;

    async fn handshake(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let start = Step::AwaitInit {
            inbound: request.into_inner(),
            endpoint: self.endpoint.clone(),
            installer: self.installer.clone(),
        };
        // The handshake runs lazily as tonic polls the response stream: no task, no channel.
        let stream = futures::stream::unfold(start, |step| async move {
            match step {
                Step::AwaitInit {
                    inbound,
                    endpoint,
                    installer,
                } => match on_init(inbound, endpoint, installer).await {
                    Ok((reply, next)) => Some((Ok(reply), next)),
                    Err(status) => Some((Err(status), Step::Done)),
                },
                Step::AwaitConfirm {
                    inbound,
                    endpoint,
                    installer,
                    responder,
                } => match on_confirm(inbound, endpoint, installer, responder).await {
                    Ok(()) => None,
                    Err(status) => Some((Err(status), Step::Done)),
                },
                Step::Done => None,
            }
        });
        Ok(Response::new(stream.boxed()))
    }
}
