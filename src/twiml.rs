//! Turns a step's actions into a TwiML document, written with quick-xml.

use crate::config::Target;
use crate::domain::TicketNumber;
use crate::flow::engine::{Action, Link};
use crate::records::Said;
use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::Writer;
use std::io::Cursor;

/// How `<Say>` speaks and where links point.
#[derive(Debug, Clone, Default)]
pub struct Style {
    /// Public base URL; links are relative when unset.
    pub base_url: Option<String>,
    /// `voice` attribute.
    pub voice: Option<String>,
    /// `language` attribute.
    pub language: String,
}

impl Style {
    fn url(&self, link: &Link) -> String {
        format!(
            "{}{}",
            self.base_url.as_deref().unwrap_or(""),
            crate::call_url::path_and_query(link)
        )
    }
}

/// Drops characters XML 1.0 cannot carry even escaped (most control characters).
pub fn xml_safe(text: &str) -> String {
    text.chars()
        .filter(|c| {
            matches!(c, '\t' | '\n' | '\r') || (*c >= ' ' && *c != '\u{FFFE}' && *c != '\u{FFFF}')
        })
        .collect()
}

/// Renders a full TwiML document; `ticket`, the call's committed ticket, is spoken where
/// the actions say its number ("your ticket" while it is not known).
pub fn render(actions: &[Action], style: &Style, ticket: Option<&TicketNumber>) -> String {
    let mut w = Writer::new(Cursor::new(Vec::with_capacity(512)));
    let out = Out { style, ticket };
    // Writing to a Vec cannot fail; errors are impossible here but handled without panicking.
    let _ = write_doc(&mut w, actions, &out);
    String::from_utf8(w.into_inner().into_inner()).unwrap_or_default()
}

type W = Writer<Cursor<Vec<u8>>>;

/// What a document is written with.
struct Out<'a> {
    style: &'a Style,
    ticket: Option<&'a TicketNumber>,
}

fn write_doc(w: &mut W, actions: &[Action], out: &Out<'_>) -> std::io::Result<()> {
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.create_element("Response").write_inner_content(|w| {
        for a in actions {
            write_action(w, a, out)?;
        }
        Ok(())
    })?;
    Ok(())
}

fn say(w: &mut W, said: &Said, out: &Out<'_>) -> std::io::Result<()> {
    let style = out.style;
    let text = xml_safe(&said.spoken(out.ticket));
    let mut el = w.create_element("Say");
    if let Some(v) = &style.voice {
        el = el.with_attribute(("voice", v.as_str()));
    }
    el.with_attribute(("language", style.language.as_str()))
        .write_text_content(BytesText::new(&text))?;
    Ok(())
}

fn redirect(w: &mut W, url: &str) -> std::io::Result<()> {
    w.create_element("Redirect")
        .with_attribute(("method", "POST"))
        .write_text_content(BytesText::new(url))?;
    Ok(())
}

fn write_action(w: &mut W, action: &Action, out: &Out<'_>) -> std::io::Result<()> {
    let style = out.style;
    match action {
        Action::Say(text) => say(w, text, out)?,
        Action::Pause(secs) => {
            w.create_element("Pause")
                .with_attribute(("length", secs.to_string().as_str()))
                .write_empty()?;
        }
        Action::Hangup => {
            w.create_element("Hangup").write_empty()?;
        }
        Action::Gather {
            prompt,
            timeout,
            num_digits,
            finish_on_key,
            action,
            on_silence,
        } => {
            w.create_element("Gather")
                .with_attributes([
                    ("input", "dtmf"),
                    ("numDigits", num_digits.to_string().as_str()),
                    ("finishOnKey", if *finish_on_key { "#" } else { "" }),
                    ("timeout", timeout.to_string().as_str()),
                    ("action", style.url(action).as_str()),
                    ("method", "POST"),
                ])
                .write_inner_content(|w| say(w, prompt, out))?;
            redirect(w, &style.url(on_silence))?;
        }
        Action::Dial {
            target,
            timeout,
            action,
            whisper,
        } => {
            let timeout = timeout.to_string();
            let action = style.url(action);
            let mut dial = w.create_element("Dial").with_attributes([
                ("action", action.as_str()),
                ("method", "POST"),
                ("timeout", timeout.as_str()),
            ]);
            // A soft transfer: the guest keeps hearing ringing while the agent hears the
            // whisper, and is connected only when that document ends.
            let whisper = whisper.as_ref().map(|l| style.url(l));
            if whisper.is_some() {
                dial = dial.with_attribute(("answerOnBridge", "true"));
            }
            dial.write_inner_content(|w| {
                match target {
                    Target::Number {
                        number,
                        send_digits,
                    } => {
                        let mut el = w.create_element("Number");
                        if let Some(d) = send_digits {
                            el = el.with_attribute(("sendDigits", d.as_str()));
                        }
                        if let Some(url) = &whisper {
                            el = el.with_attributes([
                                ("url", url.as_str()),
                                ("method", "POST"),
                                ("machineDetection", "Enable"),
                            ]);
                        }
                        el.write_text_content(BytesText::new(&xml_safe(number)))?;
                    }
                    Target::Sip { uri } => {
                        let mut el = w.create_element("Sip");
                        if let Some(url) = &whisper {
                            el = el.with_attributes([("url", url.as_str()), ("method", "POST")]);
                        }
                        el.write_text_content(BytesText::new(&xml_safe(uri)))?;
                    }
                    Target::Queue { name } => {
                        w.create_element("Queue")
                            .write_text_content(BytesText::new(&xml_safe(name)))?;
                    }
                }
                Ok(())
            })?;
        }
        Action::Enqueue {
            queue,
            action,
            wait,
        } => {
            w.create_element("Enqueue")
                .with_attributes([
                    ("action", style.url(action).as_str()),
                    ("method", "POST"),
                    ("waitUrl", style.url(wait).as_str()),
                    ("waitUrlMethod", "POST"),
                ])
                .write_text_content(BytesText::new(&xml_safe(queue)))?;
        }
        Action::Record {
            max_length,
            action,
            on_silence,
        } => {
            w.create_element("Record")
                .with_attributes([
                    ("action", style.url(action).as_str()),
                    ("method", "POST"),
                    ("maxLength", max_length.to_string().as_str()),
                    ("timeout", "5"),
                    ("finishOnKey", "#"),
                    ("playBeep", "true"),
                    ("trim", "trim-silence"),
                ])
                .write_empty()?;
            redirect(w, &style.url(on_silence))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::engine::Endpoint;
    use crate::flow::NodeRef;

    fn link(endpoint: Endpoint, silence: bool) -> Link {
        Link {
            endpoint,
            node: NodeRef {
                flow: "store".into(),
                node: "main".into(),
            },
            attempt: 2,
            seq: 3,
            silence,
            phase: Default::default(),
            pending: None,
            vars: Default::default(),
        }
    }

    #[test]
    fn a_menu_is_a_gather_followed_by_a_redirect_for_silence() {
        let style = Style {
            base_url: Some("https://ivr.example.com/tw".into()),
            voice: None,
            language: "en-US".into(),
        };
        let xml = render(
            &[Action::Gather {
                prompt: "Press 1.".into(),
                timeout: 5,
                num_digits: 1,
                finish_on_key: false,
                action: link(Endpoint::Gather, false),
                on_silence: link(Endpoint::Gather, true),
            }],
            &style,
            None,
        );
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Gather input=\"dtmf\" numDigits=\"1\" finishOnKey=\"\" timeout=\"5\" \
             action=\"https://ivr.example.com/tw/voice/gather?node=store.main&amp;attempt=2&amp;seq=3\" method=\"POST\">\
             <Say language=\"en-US\">Press 1.</Say></Gather>\
             <Redirect method=\"POST\">https://ivr.example.com/tw/voice/gather?node=store.main&amp;attempt=2&amp;seq=3&amp;silence=1</Redirect></Response>"
        );
    }

    #[test]
    fn hostile_text_is_escaped_and_control_characters_dropped() {
        let xml = render(
            &[Action::Say("<Hangup/> & 'x' \"y\"\u{7}".into())],
            &Style::default(),
            None,
        );
        assert!(
            xml.contains("&lt;Hangup/&gt; &amp; &apos;x&apos; &quot;y&quot;</Say>"),
            "{xml}"
        );
        assert!(!xml.contains('\u{7}'));
    }

    #[test]
    fn an_escalation_dials_the_number_and_presses_five() {
        let xml = render(
            &[Action::Dial {
                target: Target::Number {
                    number: "+18007373233".into(),
                    send_digits: Some("ww5".into()),
                },
                timeout: 30,
                action: link(Endpoint::Dial, false),
                whisper: None,
            }],
            &Style::default(),
            None,
        );
        assert!(
            xml.contains("<Number sendDigits=\"ww5\">+18007373233</Number></Dial>"),
            "{xml}"
        );
        assert!(
            !xml.contains("answerOnBridge"),
            "no whisper, no answerOnBridge"
        );
    }

    #[test]
    fn a_soft_transfer_whispers_to_the_agent_while_the_guest_hears_ringing() {
        for target in [
            Target::Sip {
                uri: "sip:350152@pbx.example.com".into(),
            },
            Target::Number {
                number: "+12045550100".into(),
                send_digits: None,
            },
        ] {
            let xml = render(
                &[Action::Dial {
                    target: target.clone(),
                    timeout: 30,
                    action: link(Endpoint::Dial, false),
                    whisper: Some(link(Endpoint::Whisper, false)),
                }],
                &Style::default(),
                None,
            );
            assert!(xml.contains("answerOnBridge=\"true\""), "{xml}");
            assert!(xml.contains("url=\"/voice/whisper?"), "{xml}");
            let machine = xml.contains("machineDetection=\"Enable\"");
            assert_eq!(machine, matches!(target, Target::Number { .. }), "{xml}");
        }
    }
}
