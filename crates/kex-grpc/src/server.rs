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

/// A handshake whose response went out, waiting for the confirm.
struct AwaitConfirm<I> {
    inbound: Streaming<Frame>,
    endpoint: Arc<Endpoint>,
    installer: Arc<I>,
    responder: Responder,
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
) -> Result<(Frame, AwaitConfirm<I>), Status> {
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
        AwaitConfirm {
            inbound,
            endpoint,
            installer,
            responder,
        },
    ))
}

async fn on_confirm<I: SaInstaller>(
    mut inbound: Streaming<Frame>,
    endpoint: Arc<Endpoint>,
    installer: Arc<I>,
    responder: Responder,
) -> Result<(), Status> {
    let frame = match next_frame(&mut inbound, &endpoint, "confirm").await {
        Ok(Some(frame)) => frame,
        Ok(None) | Err(_) => {
            // The outbound SA stays the old one; the new inbound SA stays (the initiator may
            // already use it) until a later handshake replaces it.
            let err = responder.abandon(&endpoint);
            return Err(to_status(&err));
        }
    };
    // `_pair` keeps this pair's other handshakes out until the pair is established here
    let (actions, _pair) = responder
        .on_confirm_guarded(&endpoint, &frame.message)
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
        // The init is handled before the response headers go out, so that the headers and the
        // response message leave in one write, and a refused init is a trailers-only reply.
        let (reply, next) = on_init(
            request.into_inner(),
            self.endpoint.clone(),
            self.installer.clone(),
        )
        .await?;
        // The rest runs lazily as tonic polls the response stream: no task, no channel.
        let confirm = futures::stream::unfold(Some(next), |step| async move {
            let AwaitConfirm {
                inbound,
                endpoint,
                installer,
                responder,
            } = step?;
            match on_confirm(inbound, endpoint, installer, responder).await {
                Ok(()) => None,
                Err(status) => Some((Err(status), None)),
            }
        });
        Ok(Response::new(
            futures::stream::once(async { Ok(reply) })
                .chain(confirm)
                .boxed(),
        ))
    }
}
