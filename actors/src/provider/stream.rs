//! Drives an upstream SSE body through a wire format's [`StreamDecoder`], yielding
//! [`StreamEvent`]s as they arrive and ending with an error when the body breaks off early.

use eventsource_stream::Eventsource;
use futures::stream::{BoxStream, StreamExt};

use crate::model::StreamEvent;
use crate::provider::ProviderError;

/// A wire format's stream parser.
pub trait StreamDecoder: Send + 'static {
    /// One SSE event (`event` name may be empty). `Ok(None)` for events that carry nothing
    /// for the answer.
    fn on_event(&mut self, event: &str, data: &str) -> Result<Option<StreamEvent>, ProviderError>;
    /// The body ended without the format's final event: a finished answer or a cut.
    fn on_end(&mut self) -> Result<StreamEvent, ProviderError>;
    /// More events of the last SSE event, when it carried several (asked after each
    /// `on_event` until `None`).
    fn pending(&mut self) -> Option<StreamEvent> {
        None
    }
}

/// A decoded upstream stream: deltas, then exactly one `Finished` or one error.
pub type UpstreamStream = BoxStream<'static, Result<StreamEvent, ProviderError>>;

/// Decodes an upstream response `body` with `decoder`.
pub fn decode(body: hyper::body::Incoming, mut decoder: impl StreamDecoder) -> UpstreamStream {
    let mut events = http_body_util::BodyDataStream::new(body).eventsource();
    Box::pin(async_stream::stream! {
        loop {
            match events.next().await {
                Some(Ok(event)) => match decoder.on_event(&event.event, &event.data) {
                    Ok(Some(finished @ StreamEvent::Finished { .. })) => {
                        yield Ok(finished);
                        return;
                    }
                    Ok(Some(delta)) => {
                        yield Ok(delta);
                        while let Some(more) = decoder.pending() {
                            yield Ok(more);
                        }
                    }
                    Ok(None) => {}
                    Err(error) => {
                        yield Err(error);
                        return;
                    }
                },
                Some(Err(error)) => {
                    yield Err(ProviderError::StreamCut(error.to_string()));
                    return;
                }
                None => {
                    yield decoder.on_end();
                    return;
                }
            }
        }
    })
}
