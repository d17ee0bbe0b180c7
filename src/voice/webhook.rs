//! The webhook as it arrives: the body read within its limits, the signature checked,
//! the form and the call URL parsed. Refusals (403, 408, 413) are answered here.

use crate::call_url::CallUrl;
use crate::signature;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::ops::Range;
use std::time::Duration;

/// Largest webhook body accepted; Twilio's forms are a few kilobytes.
pub const MAX_BODY: usize = 64 * 1024;
/// The longest a webhook's body may take to arrive. The platform sends it at once; a
/// client that trickles it holds a connection and its buffers, so it is cut off.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A verified webhook: its POST parameters and what its URL says of the call.
#[derive(Debug, Clone)]
pub struct Webhook {
    params: Form,
    /// The call's state, from the URL the server wrote into its last answer.
    pub url: CallUrl,
}

/// A form body, decoded into one string: each name and value is a range of it. Twilio
/// posts some twenty parameters per webhook; this is two allocations instead of forty.
#[derive(Debug, Clone, Default)]
struct Form {
    text: String,
    pairs: Vec<(Range<usize>, Range<usize>)>,
}

impl Form {
    fn parse(body: &[u8]) -> Self {
        // Decoding shortens names and values (but for invalid UTF-8, replaced): a hint.
        let mut text = String::with_capacity(body.len());
        // Twilio posts some twenty; a hostile body of ampersands is not sized up front.
        let mut pairs = Vec::with_capacity(32);
        for (name, value) in form_urlencoded::parse(body) {
            let start = text.len();
            text.push_str(&name);
            let mid = text.len();
            text.push_str(&value);
            pairs.push((start..mid, mid..text.len()));
        }
        Self { text, pairs }
    }

    /// Every name and value, in the order posted.
    fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs
            .iter()
            .map(|(k, v)| (&self.text[k.clone()], &self.text[v.clone()]))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
}

impl Webhook {
    /// A webhook from its form body and query string, parsed as the edge parses them
    /// (after the signature check); for tools such as the fuzz target.
    pub fn from_raw(body: &[u8], query: &str) -> Self {
        Self {
            params: Form::parse(body),
            url: CallUrl::parse(query),
        }
    }

    /// The first value of a POST parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name)
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// Rejected webhooks logged each second at most; the rest are counted in the next line.
static REJECTIONS_LOGGED: crate::logging::Throttle = crate::logging::Throttle::new(5);

/// The `endpoint` label of a webhook path: one of ours, or `unknown`. Never the raw path,
/// which anyone can vary without a signature: one series per path sent grew `/metrics` to
/// 244 MB under 60,000 unsigned requests.
pub fn endpoint_label(path: &str) -> &'static str {
    match path.strip_prefix("/voice/").unwrap_or("") {
        "incoming" => "incoming",
        "gather" => "gather",
        "dial" => "dial",
        "record" => "record",
        "queue" => "queue",
        "queue/wait" => "queue_wait",
        "whisper" => "whisper",
        "screen" => "screen",
        "status" => "status",
        "fallback" => "fallback",
        _ => "unknown",
    }
}

/// The answer to a webhook body over [`MAX_BODY`]: 413 (the platform never sends one, so
/// the sender is hardly a caller's platform), with the safe route's TwiML all the same.
pub fn too_large(state: &AppState, path: &str) -> Response {
    state.metrics.webhook(endpoint_label(path), "too_large");
    state
        .metrics
        .refused
        .with_label_values(&["too_large"])
        .inc();
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        state.last_resort.clone(),
    )
        .into_response()
}

impl FromRequest<AppState> for Webhook {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let endpoint = endpoint_label(parts.uri.path());
        let bytes: Bytes =
            match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, MAX_BODY))
                .await
            {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(_)) => return Err(too_large(state, parts.uri.path())),
                Err(_) => {
                    state
                        .metrics
                        .refused
                        .with_label_values(&["body_timeout"])
                        .inc();
                    return Err(plain(
                        StatusCode::REQUEST_TIMEOUT,
                        "request body too slow\n",
                    ));
                }
            };
        let params = Form::parse(&bytes);
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        if let Some(token) = &state.config.twilio_auth_token {
            let url = match &state.config.public_url {
                Some(base) => format!("{base}{path_and_query}"),
                None => {
                    let host = parts
                        .headers
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("localhost");
                    format!("http://{host}{path_and_query}")
                }
            };
            let given = parts
                .headers
                .get("x-twilio-signature")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            if given.is_empty()
                || !signature::verify(
                    token.expose(),
                    &url,
                    &params.iter().collect::<Vec<_>>(),
                    given,
                )
            {
                if let Some(skipped) = REJECTIONS_LOGGED.allow() {
                    tracing::warn!(
                        path = %crate::domain::redact_path(parts.uri.path()),
                        signed = !given.is_empty(),
                        skipped,
                        "webhook rejected: invalid signature (skipped: rejections not logged since the last)"
                    );
                }
                state.metrics.webhook(endpoint, "forbidden");
                return Err(plain(StatusCode::FORBIDDEN, "invalid signature\n"));
            }
        }
        Ok(Self {
            params,
            url: CallUrl::parse(parts.uri.query().unwrap_or("")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_is_decoded_into_its_names_and_values_in_order() {
        let form = Form::parse(
            b"From=%2B15145550123&SpeechResult=two+words&Digits=&Digits=7&Caf%C3%A9=%E2%82%AC&bare",
        );
        assert_eq!(
            form.iter().collect::<Vec<_>>(),
            [
                ("From", "+15145550123"),
                ("SpeechResult", "two words"),
                ("Digits", ""),
                ("Digits", "7"),
                ("Café", "€"),
                ("bare", ""),
            ]
        );
        assert_eq!(form.get("Digits"), Some(""), "the first of a repeated name");
        assert_eq!(form.get("To"), None);
        assert_eq!(Form::parse(b"").iter().count(), 0);
        let lossy = Form::parse(b"Body=%FF");
        assert_eq!(
            lossy.get("Body"),
            Some("\u{FFFD}"),
            "invalid UTF-8 replaced"
        );
    }
}
