//! The webhook URL protocol: the state of a call between two webhooks travels in the URL
//! of the next one (`/voice/gather?node=store.main&attempt=1&seq=2&v.callback=…`). The
//! TwiML writes it with [`path_and_query`]; the edge reads it back with [`CallUrl::parse`],
//! after the signature check. Both sides keep the same limits, here.

use crate::flow::engine::{Endpoint, Link, Phase, Vars};
use crate::flow::NodeRef;

/// Most call variables a URL carries; more are dropped.
pub const MAX_VARS: usize = 32;
/// Longest value of a call variable, in bytes; a longer one is dropped.
pub const MAX_VAR_LEN: usize = 2048;
/// Longest value being confirmed (`value=`), in bytes; a longer one is dropped.
pub const MAX_PENDING_LEN: usize = 64;
/// Longest node name kept in an error message.
const MAX_NODE_SHOWN: usize = 80;

/// The path of an endpoint.
pub fn path(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Gather => "/voice/gather",
        Endpoint::Dial => "/voice/dial",
        Endpoint::Record => "/voice/record",
        Endpoint::Queue => "/voice/queue",
        Endpoint::QueueWait => "/voice/queue/wait",
        Endpoint::Whisper => "/voice/whisper",
        Endpoint::Screen => "/voice/screen",
    }
}

/// The path and query of a link, e.g. `/voice/gather?node=store.main&attempt=1&seq=1`.
pub fn path_and_query(link: &Link) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("node", &link.node.to_string());
    q.append_pair("attempt", &link.attempt.to_string());
    q.append_pair("seq", &link.seq.to_string());
    if link.silence {
        q.append_pair("silence", "1");
    }
    if link.phase == Phase::Confirm {
        q.append_pair("phase", "confirm");
    }
    if let Some(v) = &link.pending {
        q.append_pair("value", v);
    }
    for (name, value) in &link.vars {
        q.append_pair(&format!("v.{name}"), value);
    }
    format!("{}?{}", path(link.endpoint), q.finish())
}

/// What a webhook's URL says of its call, read back; anything malformed is dropped or
/// taken at its default, never trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallUrl {
    /// `node=`, as sent: [`CallUrl::node`] parses it.
    pub node: Option<String>,
    /// Menu attempt; 0 when absent.
    pub attempt: u32,
    /// Sequence number of the webhook within the call; 0 when absent.
    pub seq: u32,
    /// The redirect after a Gather or Record that got nothing.
    pub silence: bool,
    /// Entry nodes: which question.
    pub phase: Phase,
    /// Entry nodes: the value being confirmed.
    pub pending: Option<String>,
    /// Call variables (`v.NAME=value`).
    pub vars: Vars,
}

impl CallUrl {
    /// Reads a query string. Of a repeated name the first counts; of a repeated
    /// variable, the last.
    pub fn parse(query: &str) -> Self {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let first = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let number = |name: &str| first(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        CallUrl {
            node: first("node").map(str::to_owned),
            attempt: number("attempt"),
            seq: number("seq"),
            silence: first("silence").is_some(),
            phase: match first("phase") {
                Some("confirm") => Phase::Confirm,
                _ => Phase::Enter,
            },
            pending: first("value")
                .filter(|v| v.len() <= MAX_PENDING_LEN && !v.chars().any(char::is_control))
                .map(str::to_owned),
            vars: pairs
                .iter()
                .filter_map(|(k, v)| {
                    let name = k.strip_prefix("v.")?;
                    let ok_name = crate::domain::is_ident(name);
                    let ok_value = v.len() <= MAX_VAR_LEN && !v.chars().any(char::is_control);
                    (ok_name && ok_value).then(|| (name.to_string(), v.clone()))
                })
                .take(MAX_VARS)
                .collect(),
        }
    }

    /// The node the webhook continues at, or the error naming what was sent.
    pub fn node(&self) -> Result<NodeRef, crate::flow::engine::EngineError> {
        let raw = self.node.as_deref().unwrap_or("");
        NodeRef::parse_qualified(raw).ok_or_else(|| {
            crate::flow::engine::EngineError::UnknownNode(
                raw.chars().take(MAX_NODE_SHOWN).collect(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_text(rng: &mut fastrand::Rng, max: usize) -> String {
        let pool = [
            'a', 'Z', '7', ' ', '&', '=', '?', '+', '%', '#', '/', 'é', '€', '.', '-',
        ];
        (0..rng.usize(0..=max))
            .map(|_| pool[rng.usize(..pool.len())])
            .collect()
    }

    fn random_link(rng: &mut fastrand::Rng) -> Link {
        let endpoints = [
            Endpoint::Gather,
            Endpoint::Dial,
            Endpoint::Record,
            Endpoint::Queue,
            Endpoint::QueueWait,
        ];
        let ident = |rng: &mut fastrand::Rng| -> String {
            let first = rng.lowercase().to_string();
            let rest: String = (0..rng.usize(0..12))
                .map(|_| ['a', 'b', 'z', '0', '9', '_'][rng.usize(..6)])
                .collect();
            first + &rest
        };
        Link {
            endpoint: endpoints[rng.usize(..endpoints.len())],
            node: NodeRef {
                flow: ident(rng),
                node: ident(rng),
            },
            attempt: rng.u32(1..=u32::MAX),
            seq: rng.u32(1..=u32::MAX),
            silence: rng.bool(),
            phase: if rng.bool() {
                Phase::Confirm
            } else {
                Phase::Enter
            },
            pending: rng.bool().then(|| random_text(rng, MAX_PENDING_LEN / 4)),
            vars: (0..rng.usize(0..=MAX_VARS))
                .map(|_| (ident(rng), random_text(rng, 200)))
                .collect(),
        }
    }

    #[test]
    fn every_link_reads_back_as_it_was_written() {
        let seed = fastrand::u64(..);
        let mut rng = fastrand::Rng::with_seed(seed);
        for _ in 0..5_000 {
            let link = random_link(&mut rng);
            let written = path_and_query(&link);
            let (path, query) = written.split_once('?').expect("a query");
            assert_eq!(path, super::path(link.endpoint));
            let read = CallUrl::parse(query);
            assert_eq!(
                read.node().ok(),
                Some(link.node.clone()),
                "seed {seed}: {written}"
            );
            assert_eq!(read.attempt, link.attempt, "seed {seed}: {written}");
            assert_eq!(read.seq, link.seq, "seed {seed}: {written}");
            assert_eq!(read.silence, link.silence, "seed {seed}: {written}");
            assert_eq!(read.phase, link.phase, "seed {seed}: {written}");
            assert_eq!(read.pending, link.pending, "seed {seed}: {written}");
            assert_eq!(read.vars, link.vars, "seed {seed}: {written}");
        }
    }

    #[test]
    fn what_the_limits_refuse_is_dropped_not_trusted() {
        let long = "9".repeat(MAX_VAR_LEN + 1);
        let many: String = (0..40).map(|i| format!("&v.n{i}=x")).collect();
        let url = CallUrl::parse(&format!(
            "node=store.main&attempt=x&seq=-1&phase=other&value={}&v.Bad-Name=1&v.ok=%07&v.long={long}{many}",
            "1".repeat(MAX_PENDING_LEN + 1)
        ));
        assert_eq!(url.attempt, 0);
        assert_eq!(url.seq, 0);
        assert_eq!(url.phase, Phase::Enter);
        assert_eq!(url.pending, None);
        assert!(!url.vars.contains_key("ok"), "a control character");
        assert!(!url.vars.contains_key("long"));
        assert_eq!(url.vars.len(), MAX_VARS);
        assert!(CallUrl::parse("node=nodot").node().is_err());
        assert!(CallUrl::parse("").node().is_err());
    }
}
