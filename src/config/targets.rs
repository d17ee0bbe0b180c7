//! Transfer targets: how each is reached, and what its agent hears first.

use anyhow::bail;
use serde::Deserialize;
use std::collections::BTreeMap;

/// How a transfer target is reached.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Target {
    /// A phone number, optionally followed by DTMF digits once answered (`w` waits half a second).
    Number {
        /// E.164 number.
        number: String,
        /// Digits to send after the call connects.
        send_digits: Option<String>,
    },
    /// A SIP URI.
    Sip {
        /// `sip:` URI.
        uri: String,
    },
    /// A Twilio queue the caller waits in.
    Queue {
        /// Queue name.
        name: String,
    },
}

/// What the agent who answers a transfer hears before the guest is connected (a soft
/// transfer), set per target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Whisper {
    /// A blind transfer: the agent hears the guest at once.
    #[default]
    Off,
    /// The agent hears the guest's concern, then the guest is connected.
    Announce,
    /// The agent hears the concern and takes the call by pressing 1; any other key, no key
    /// or an answering machine sends the guest to the transfer's failed route.
    Screen,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePbx {
    mode: Option<String>,
    main_number: Option<String>,
    sip_domain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTarget {
    extension: Option<String>,
    number: Option<String>,
    send_digits: Option<String>,
    sip: Option<String>,
    queue: Option<String>,
    whisper: Option<bool>,
    screen: Option<bool>,
}

pub(super) const GUEST_CARE_NUMBER: &str = "+18007373233";

/// A target's whisper from its `whisper` and `screen` settings. A person answers an
/// extension, a SIP URI or a plain number: extensions screen by default, numbers announce.
/// A number with `send_digits` is answered by an IVR (the escalation line's "press 5", a
/// PBX attendant): nobody there can hear a whisper or press 1, so it has none.
fn whisper_of(
    name: &str,
    target: &Target,
    is_extension: bool,
    whisper: Option<bool>,
    screen: Option<bool>,
) -> anyhow::Result<Whisper> {
    let ivr = matches!(
        target,
        Target::Number {
            send_digits: Some(_),
            ..
        }
    );
    if matches!(target, Target::Queue { .. }) {
        if whisper.is_some() || screen.is_some() {
            bail!("target {name:?} is a queue: whisper and screen apply to people, not queues");
        }
        return Ok(Whisper::Off);
    }
    if ivr && (whisper == Some(true) || screen == Some(true)) {
        bail!(
            "target {name:?} is reached through an IVR (send_digits): nobody there hears a \
             whisper or presses 1; set whisper = false or remove it"
        );
    }
    if whisper == Some(false) && screen == Some(true) {
        bail!("target {name:?}: screen = true needs the whisper; remove whisper = false");
    }
    let announce = whisper.unwrap_or(!ivr);
    let screens = screen.unwrap_or(is_extension);
    Ok(match (announce, screens) {
        (false, _) => Whisper::Off,
        (true, true) => Whisper::Screen,
        (true, false) => Whisper::Announce,
    })
}

fn default_targets() -> BTreeMap<String, FileTarget> {
    let ext = |e: &str| FileTarget {
        extension: Some(e.into()),
        ..FileTarget::default()
    };
    BTreeMap::from([
        ("oom".to_string(), ext("350152")),
        ("after_sales".to_string(), ext("2005")),
        (
            "escalation".to_string(),
            FileTarget {
                number: Some(GUEST_CARE_NUMBER.into()),
                send_digits: Some("ww5".into()),
                ..FileTarget::default()
            },
        ),
        (
            "escalation_queue".to_string(),
            FileTarget {
                queue: Some("escalation".into()),
                ..FileTarget::default()
            },
        ),
    ])
}

/// Resolves the targets of the file over the defaults: how each is reached (extensions by
/// `pbx.mode`) and its whisper.
pub(super) fn resolve(
    pbx: FilePbx,
    file_targets: BTreeMap<String, FileTarget>,
    guest_care_number: &str,
) -> anyhow::Result<(BTreeMap<String, Target>, BTreeMap<String, Whisper>)> {
    // Extensions default to SIP URIs on a placeholder PBX domain: an unconfigured server
    // reaches nobody (the caller gets voicemail and a ticket) rather than dialling itself.
    let pbx_mode = pbx.mode.as_deref().unwrap_or("sip");
    let sip_domain = pbx.sip_domain.unwrap_or_else(|| "pbx.example.com".into());
    let main_number = match (pbx_mode, pbx.main_number) {
        ("dial", None) => bail!(
            "pbx.mode = \"dial\" needs pbx.main_number, the PBX number that answers extensions"
        ),
        ("dial", Some(n)) if n == guest_care_number => bail!(
            "pbx.main_number {n} is the Guest Care line this server answers: extensions would \
             dial back into the IVR. Use the PBX's own number, or pbx.mode = \"sip\""
        ),
        (_, n) => n.unwrap_or_default(),
    };
    let mut targets_file = default_targets();
    targets_file.extend(file_targets);
    let mut targets = BTreeMap::new();
    let mut whispers = BTreeMap::new();
    for (name, t) in targets_file {
        let is_extension = t.extension.is_some();
        let (whisper_set, screen_set) = (t.whisper, t.screen);
        let target = match (t.extension, t.number, t.sip, t.queue) {
            (Some(ext), None, None, None) => match pbx_mode {
                "sip" => Target::Sip {
                    uri: format!("sip:{ext}@{sip_domain}"),
                },
                "dial" => Target::Number {
                    number: main_number.clone(),
                    send_digits: Some(format!("ww{ext}")),
                },
                other => bail!("pbx.mode must be \"dial\" or \"sip\", not {other:?}"),
            },
            (None, Some(number), None, None) => Target::Number {
                number,
                send_digits: t.send_digits,
            },
            (None, None, Some(uri), None) => Target::Sip { uri },
            (None, None, None, Some(name)) => Target::Queue { name },
            _ => bail!("target {name:?} must have exactly one of extension, number, sip or queue"),
        };
        if let Target::Number {
            send_digits: Some(d),
            ..
        } = &target
        {
            if !d
                .bytes()
                .all(|b| b.is_ascii_digit() || b"wW*#".contains(&b))
            {
                bail!("target {name:?}: send_digits may hold only 0-9, *, # and w");
            }
        }
        let whisper = whisper_of(&name, &target, is_extension, whisper_set, screen_set)?;
        if whisper != Whisper::Off {
            whispers.insert(name.clone(), whisper);
        }
        targets.insert(name, target);
    }
    Ok((targets, whispers))
}
