//! Arbitrary bytes as a webhook (query string, a newline, the form body), parsed as the edge
//! parses them, taken through one flow step and rendered: the TwiML must be well-formed.
#![no_main]

use ivr::config::Config;
use ivr::flow::engine::{self, CallState, Env};
use ivr::flow::FlowSet;
use ivr::voice::{gather_input, Webhook};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn setup() -> &'static (Config, FlowSet) {
    static SETUP: OnceLock<(Config, FlowSet)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let config = Config::from_toml("").expect("default configuration");
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../ivr_flows");
        let flows = ivr::flow::load_dir(std::path::Path::new(dir), &config).expect("flows");
        (config, flows)
    })
}

fn well_formed(xml: &str) {
    let mut reader = quick_xml::Reader::from_str(xml);
    reader.config_mut().check_end_names = true;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("malformed TwiML: {e}\n{xml}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (config, flows) = setup();
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let query = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 1..).unwrap_or_default();
    let hook = Webhook::from_raw(body, &query);
    let silence = data.first().is_some_and(|b| b & 1 == 1);
    let Ok(input) = gather_input(&hook, silence) else {
        return;
    };
    let env = Env {
        config,
        now: chrono::DateTime::from_timestamp(1_795_449_600, 0).unwrap_or_default(),
        hours_override: None,
        store_name: "Polo Park",
        caller: hook.param("From").unwrap_or(""),
        call_sid: hook.param("CallSid").unwrap_or(""),
        facts: None,
        caller_tickets: None,
    };
    let state = CallState {
        has_ticket: hook.param("HasTicket").is_some(),
        seq: 1,
        vars: hook.url.vars.clone(),
    };
    if let Ok(step) = engine::step(flows, &env, state, input) {
        let style = ivr::twiml::Style::default();
        well_formed(&ivr::twiml::render(&step.actions, &style, None));
    }
});
