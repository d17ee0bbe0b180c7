//! The manager console over HTTP, as a browser meets it: sign-in, cookies, the form token,
//! the sign-in limit, session expiry, roles, the call log with its CSV export, a call's
//! page and recording playback through the server. (`console_browser.rs` drives the same
//! pages in Chromium.)

mod common;

use common::console::{add_user, ConsoleClient, PASSWORD};
use common::*;
use serde_json::Value;

fn attrs_of(cookie: &str) -> Vec<String> {
    cookie.split(';').map(|a| a.trim().to_string()).collect()
}

#[tokio::test]
async fn signing_in_gives_a_strict_session_cookie_and_pages_a_strict_csp() {
    let app = spawn_app().await;
    add_user(&app, "mgr", "manager").await;
    let mut c = ConsoleClient::new(&app);

    let away = c.get("/console/calls?line=store").await;
    assert_eq!(away.status, 303);
    assert_eq!(
        away.header("location"),
        "/console/login?next=%2Fconsole%2Fcalls%3Fline%3Dstore"
    );

    let signed = c.sign_in("mgr", PASSWORD).await;
    assert_eq!(signed.status, 303, "{}", signed.body);
    let session = signed
        .set_cookies()
        .into_iter()
        .find(|s| s.starts_with("ivr_session="))
        .expect("a session cookie");
    let attrs = attrs_of(&session);
    for a in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/console"] {
        assert!(attrs.contains(&a.to_string()), "{a} in {session}");
    }
    assert!(session.len() > "ivr_session=".len() + 40, "a long token");

    let page = c.get("/console/calls").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<h1>Calls</h1>"));
    assert!(page.body.contains("mgr (manager)"));
    let csp = page.header("content-security-policy");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    assert_eq!(page.header("cache-control"), "no-store");
    // No inline script or style anywhere: every script has a src, no style attributes.
    for (i, _) in page.body.match_indices("<script") {
        let tag = &page.body[i..i + page.body[i..].find('>').expect("tag end")];
        assert!(tag.contains(" src="), "inline script: {tag}");
    }
    assert!(!page.body.contains(" style="), "inline style");
    assert!(!page.body.contains("<style"), "inline style");

    // The vendored htmx and the stylesheet come from the console itself.
    let htmx = c.get("/console/static/htmx.min.js").await;
    assert_eq!(htmx.status, 200);
    assert!(htmx.body.contains("htmx"), "htmx itself");

    // Signing out ends the session on the server, not only in the browser.
    let token = c.cookies["ivr_session"].clone();
    let out = c.post("/console/logout", &[("csrf", &page.csrf())]).await;
    assert_eq!(out.status, 303);
    c.cookies.insert("ivr_session".into(), token);
    assert_eq!(
        c.get("/console/calls").await.status,
        303,
        "old cookie refused"
    );
}

#[tokio::test]
async fn development_mode_cookies_are_not_secure_so_http_on_loopback_works() {
    let app = spawn_app().await;
    let state = app.state.clone().expect("state");
    // The same database and flows, without the Twilio auth token: development mode.
    let mut config = state.config.clone();
    config.twilio_auth_token = None;
    let dev = ivr::app::build_state(config, app.clock.clone())
        .await
        .expect("state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, ivr::app::build_router(dev).into_make_service()).await;
    });
    add_user(&app, "dev", "manager").await;
    let mut c = ConsoleClient::at(&addr);
    let signed = c.sign_in("dev", PASSWORD).await;
    assert_eq!(signed.status, 303, "{}", signed.body);
    let session = signed.set_cookies().join("\n");
    assert!(session.contains("ivr_session=") && !session.contains("Secure"));
}

#[tokio::test]
async fn wrong_passwords_are_refused_then_the_account_is_held_for_the_lockout() {
    let app = spawn_app().await;
    add_user(&app, "mgr", "manager").await;
    let mut c = ConsoleClient::new(&app);
    for _ in 0..4 {
        let no = c.sign_in("mgr", "not the password at all").await;
        assert_eq!(no.status, 401);
        assert!(no.body.contains("Wrong account name or password."));
    }
    // An unknown name reads the same as a wrong password.
    let unknown = c.sign_in("nobody", PASSWORD).await;
    assert_eq!(unknown.status, 401);
    assert!(unknown.body.contains("Wrong account name or password."));
    // A name no account can have (here a password typed in the wrong field) is refused
    // the same way, but neither counted nor written down.
    let misplaced = c.sign_in("Hunter2 Secret!", PASSWORD).await;
    assert_eq!(misplaced.status, 401);
    assert!(misplaced.body.contains("Wrong account name or password."));
    assert!(!misplaced.body.contains("Hunter2"));
    let fifth = c.sign_in("mgr", "still not it, sorry").await;
    assert_eq!(fifth.status, 429, "{}", fifth.body);
    // Held: even the right password is refused until the window has passed.
    let held = c.sign_in("mgr", PASSWORD).await;
    assert_eq!(held.status, 429);
    assert!(held
        .body
        .contains("Too many failed sign-ins for this account. Try again in 15 minutes."));
    assert!(!held.set_cookies().join(" ").contains("ivr_session="));

    app.clock
        .set(monday_morning() + chrono::Duration::minutes(16));
    let later = c.sign_in("mgr", PASSWORD).await;
    assert_eq!(later.status, 303, "{}", later.body);

    // The failures are in the audit log a manager reads.
    let audit = c.get("/console/audit").await;
    assert_eq!(audit.body.matches("sign_in.failed").count(), 6);
    assert!(!audit.body.contains("Hunter2"));
    assert!(audit.body.contains("<td>sign_in</td>"));
}

#[tokio::test]
async fn a_form_without_its_token_changes_nothing() {
    let app = spawn_app().await;
    add_user(&app, "mgr", "manager").await;
    let mut c = ConsoleClient::signed_in(&app, "mgr").await;
    let users = c.get("/console/users").await;
    let csrf = users.csrf();
    let new = [
        ("name", "agent.one"),
        ("role", "agent"),
        ("password", PASSWORD),
    ];

    let missing = c.post("/console/users", &new).await;
    assert_eq!(missing.status, 403, "{}", missing.body);
    assert!(
        missing.body.contains("nothing was changed"),
        "{}",
        missing.body
    );
    let mut forged = new.to_vec();
    forged.push(("csrf", "forged-token"));
    assert_eq!(c.post("/console/users", &forged).await.status, 403);
    assert!(!c.get("/console/users").await.body.contains("agent.one"));

    // The sign-in form has its own token: a cross-site sign-in is refused too.
    let mut other = ConsoleClient::new(&app);
    let refused = other
        .post(
            "/console/login",
            &[("name", "mgr"), ("password", PASSWORD), ("csrf", "x")],
        )
        .await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("The sign-in form was out of date."));
    // A form with fields left out gets the page, not a bare error.
    let bare = other.post("/console/login", &[]).await;
    assert_eq!(bare.status, 403);
    assert!(bare.body.contains("<form"), "{}", bare.body);

    let mut good = new.to_vec();
    good.push(("csrf", &csrf));
    let added = c.post("/console/users", &good).await;
    assert_eq!(added.status, 303, "{}", added.body);
    let listed = c.get("/console/users").await;
    assert!(listed.body.contains("<td>agent.one</td><td>agent</td>"));
    let audit = c.get("/console/audit").await;
    assert!(
        audit
            .body
            .contains("<td>mgr</td><td>user.add</td><td>agent.one (agent)</td>"),
        "{}",
        audit.body
    );
    // A bad account is refused with the reason, and nothing is added.
    let mut short = vec![
        ("name", "agent.two"),
        ("role", "agent"),
        ("password", "short"),
    ];
    short.push(("csrf", &csrf));
    let refused = c.post("/console/users", &short).await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("at least 12 characters"));
    assert!(!refused.body.contains("<td>agent.two</td>"));
}

#[tokio::test]
async fn sessions_end_when_idle_and_at_their_absolute_limit() {
    let app = spawn_app().await;
    add_user(&app, "mgr", "manager").await;
    let start = monday_morning();

    let mut idle = ConsoleClient::signed_in(&app, "mgr").await;
    app.clock.set(start + chrono::Duration::minutes(29));
    assert_eq!(idle.get("/console/calls").await.status, 200);
    app.clock.set(start + chrono::Duration::minutes(29 + 31));
    let gone = idle.get("/console/calls").await;
    assert_eq!(gone.status, 303);
    assert_eq!(
        gone.header("location"),
        "/console/login?next=%2Fconsole%2Fcalls&reason=expired"
    );
    let login = idle.get(&gone.header("location")).await;
    assert!(login
        .body
        .contains("Your session has ended. Sign in again."));
    // htmx is told to load the sign-in page as a whole page.
    let hx = idle.htmx_get("/console/calls?line=store").await;
    assert_eq!(hx.status, 204);
    assert!(hx.header("hx-redirect").starts_with("/console/login?next="));

    // Used every 20 minutes, a session still ends 12 hours after sign-in.
    let t0 = start + chrono::Duration::hours(1);
    app.clock.set(t0);
    let mut busy = ConsoleClient::signed_in(&app, "mgr").await;
    let mut t = t0;
    while t < t0 + chrono::Duration::hours(12) - chrono::Duration::minutes(20) {
        t += chrono::Duration::minutes(20);
        app.clock.set(t);
        assert_eq!(busy.get("/console/calls").await.status, 200, "at {t}");
    }
    app.clock
        .set(t0 + chrono::Duration::hours(12) + chrono::Duration::minutes(1));
    assert_eq!(busy.get("/console/calls").await.status, 303);
}

#[tokio::test]
async fn agents_read_calls_but_cannot_administer_users() {
    let app = spawn_app().await;
    add_user(&app, "mgr", "manager").await;
    add_user(&app, "agent.one", "agent").await;
    let mut agent = ConsoleClient::signed_in(&app, "agent.one").await;
    let calls = agent.get("/console/calls").await;
    assert_eq!(calls.status, 200);
    assert!(
        !calls.body.contains("href=\"/console/users\""),
        "no Users link"
    );
    let csrf = calls.csrf();
    for path in ["/console/users", "/console/audit"] {
        let page = agent.get(path).await;
        assert_eq!(page.status, 403, "{path}");
        assert!(page
            .body
            .contains("Only managers may see and change console accounts."));
    }
    let disable = agent
        .post("/console/users/mgr/disable", &[("csrf", &csrf)])
        .await;
    assert_eq!(disable.status, 403);
    let mut mgr = ConsoleClient::signed_in(&app, "mgr").await;
    assert!(mgr.get("/console/users").await.body.contains("Disable mgr"));
    assert!(!mgr
        .get("/console/audit")
        .await
        .body
        .contains("user.disable"));

    // A manager disables the agent: the agent's session ends at once.
    let csrf = mgr.get("/console/users").await.csrf();
    let done = mgr
        .post("/console/users/agent.one/disable", &[("csrf", &csrf)])
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(agent.get("/console/calls").await.status, 303);
    assert_eq!(agent.sign_in("agent.one", PASSWORD).await.status, 401);
    // And cannot disable themself.
    let own = mgr
        .post("/console/users/mgr/disable", &[("csrf", &csrf)])
        .await;
    assert_eq!(own.status, 400);
    assert!(own.body.contains("You cannot disable your own account."));
}

/// Every call the API lists for `query`, all pages.
async fn api_sids(app: &TestApp, query: &str) -> Vec<String> {
    let mut sids = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = app
            .api(&format!("/api/calls?limit=200&{query}{cursor}"))
            .await;
        for c in page["calls"].as_array().expect("calls") {
            sids.push(c["call_sid"].as_str().expect("sid").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return sids,
        }
    }
}

/// The call SIDs of a CSV export, after checking its header.
fn csv_sids(csv: &str) -> Vec<String> {
    let mut lines = csv.split("\r\n").filter(|l| !l.is_empty());
    assert_eq!(
        lines.next(),
        Some(
            "call_sid,started_at,line,store,caller,called,flow,status,duration_seconds,\
             outcome,errors,recording"
        )
    );
    lines
        .map(|l| l.split(',').next().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn the_call_log_filters_pages_and_exports_the_whole_filtered_set() {
    // 1,200 synthetic calls over 30 days, then a real store call and a real Guest Care one.
    let (app, _dir) = spawn_seeded(1_200).await;
    let mut store_call = app.call_from(STORE, "+12045559876").await;
    store_call.press("1").await;
    let mut gc = app.call(GUEST_CARE).await;
    gc.press("1").await;
    add_user(&app, "agent.one", "agent").await;
    let mut c = ConsoleClient::signed_in(&app, "agent.one").await;

    // The first page: 50 calls, newest first, with a link to the next.
    let first = c.get("/console/calls").await;
    assert_eq!(first.status, 200);
    assert!(first.body.contains("50 calls on this page, newest first"));
    let older = first
        .body
        .split("rel=\"next\" hx-get=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a link to older calls")
        .replace("&#38;", "&");
    let second = c.get(&older).await;
    assert_eq!(second.status, 200);
    assert!(
        second.body.contains("Newest calls"),
        "{older}: {}",
        second.body
    );

    // The caller filter, by last four digits: the real store call.
    let mine = c.get("/console/calls?caller=9876").await;
    assert!(mine.body.contains(&store_call.sid), "{}", mine.body);
    assert!(mine.body.contains("Store: Polo Park"));
    let by_store = c.get("/console/calls?store=Polo+Park").await;
    assert!(
        by_store.body.contains("1 calls on this page"),
        "{}",
        by_store.body
    );

    // Filters the API also knows: the CSV holds exactly the calls the API lists, across
    // every page, not the 50 on screen.
    for (console, api) in [
        ("", ""),
        ("line=store", "line=store"),
        (
            "from=2026-11-10&to=2026-11-16&line=guest_care",
            "since=2026-11-10&until=2026-11-17&line=guest_care",
        ),
        ("outcome=transferred%3A*", "outcome=transferred%3A*"),
        ("category=OOM", "category=OOM"),
    ] {
        let csv = c.get(&format!("/console/calls.csv?{console}")).await;
        assert_eq!(csv.status, 200);
        assert_eq!(csv.header("content-type"), "text/csv; charset=utf-8");
        assert!(csv.header("content-disposition").contains("calls.csv"));
        let got = csv_sids(&csv.body);
        let want = api_sids(&app, api).await;
        assert_eq!(got, want, "{console}");
        if console.is_empty() {
            assert_eq!(got.len(), 1_202);
        }
        assert!(
            got.len() > 50 || !console.is_empty(),
            "{console}: {}",
            got.len()
        );
    }

    // A bad filter is said on the page, not a bare error.
    let bad = c.get("/console/calls?from=yesterday").await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("The from date must be like 2026-12-07."));
    assert!(bad.body.contains("<h1>Calls</h1>"));
}

#[tokio::test]
async fn a_calls_page_shows_its_steps_tickets_emails_and_why_it_cannot_play() {
    let app = spawn_app().await;
    // A store line court summons: a ticket, an e-mail to legal, a voicemail.
    let mut call = app.call_from_another(STORE).await;
    call.press("7").await;
    call.press("1").await;
    call.leave_voicemail("https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1")
        .await;
    let record: Value = call.record().await;
    let ticket = record["tickets"][0]["number"]
        .as_str()
        .expect("a ticket")
        .to_string();
    add_user(&app, "agent.one", "agent").await;
    let mut c = ConsoleClient::signed_in(&app, "agent.one").await;
    let page = c.get(&format!("/console/calls/{}", call.sid)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let body = &page.body;
    assert!(body.contains("<h2 id=\"steps-h\">What happened</h2>"));
    assert!(body.contains("Keys pressed: <kbd>7</kbd>"), "{body}");
    assert!(body.contains("Keys pressed: <kbd>1</kbd>"), "{body}");
    assert!(body.contains(&format!("<td>{ticket}</td>")), "{body}");
    assert!(body.contains("legal"), "the e-mail to legal: {body}");
    assert!(
        body.contains("playback is not configured: set TWILIO_ACCOUNT_SID"),
        "{body}"
    );
    assert!(!body.contains("<audio"));
    let nope = c.get("/console/calls/CAnosuchcall").await;
    assert_eq!(nope.status, 404);
    assert!(nope.body.contains("There is no call CAnosuchcall."));
}

/// A stand-in for Twilio's recordings endpoint: checks the account's basic auth and
/// serves 1000 bytes, honouring a Range header.
async fn recordings_server() -> String {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    async fn serve(headers: HeaderMap, uri: axum::http::Uri) -> axum::response::Response {
        use base64::Engine;
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("AC123:{AUTH_TOKEN}"))
        );
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&want) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        if !uri.path().ends_with("/Recordings/RE9.mp3") {
            return StatusCode::NOT_FOUND.into_response();
        }
        let audio: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        match headers.get("range").and_then(|v| v.to_str().ok()) {
            Some("bytes=100-199") => (
                StatusCode::PARTIAL_CONTENT,
                [
                    ("content-range", "bytes 100-199/1000"),
                    ("accept-ranges", "bytes"),
                ],
                audio[100..200].to_vec(),
            )
                .into_response(),
            _ => ([("accept-ranges", "bytes")], audio).into_response(),
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, axum::Router::new().fallback(serve)).await;
    });
    addr
}

#[tokio::test]
async fn recordings_play_through_the_server_with_the_account_credentials() {
    let twilio = recordings_server().await;
    let app = spawn_with(Options {
        toml: format!(
            "[lines.stores]\n\"{STORE}\" = \"Polo Park\"\n[console]\nrecordings_base = \"{twilio}\"\n"
        ),
        account_sid: Some("AC123"),
        ..Options::default()
    })
    .await;
    let mut call = app.call_from_another(STORE).await;
    call.press("7").await;
    call.press("1").await;
    call.leave_voicemail(&format!(
        "{twilio}/2010-04-01/Accounts/AC123/Recordings/RE9"
    ))
    .await;
    let mut elsewhere = app.call_from_another(STORE).await;
    elsewhere.press("7").await;
    elsewhere.press("1").await;
    elsewhere
        .leave_voicemail("https://recordings.example.net/RE10")
        .await;
    add_user(&app, "agent.one", "agent").await;
    let mut c = ConsoleClient::signed_in(&app, "agent.one").await;

    let page = c.get(&format!("/console/calls/{}", call.sid)).await;
    let src = format!("/console/calls/{}/recording", call.sid);
    assert!(
        page.body
            .contains(&format!("<audio controls preload=\"none\" src=\"{src}\"")),
        "{}",
        page.body
    );
    let whole = c.get(&src).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-type"), "audio/mpeg");
    assert_eq!(whole.header("content-length"), "1000");
    assert_eq!(whole.header("cache-control"), "private, no-store");
    let part = {
        let http = reqwest::Client::new();
        let cookie = format!("ivr_session={}", c.cookies["ivr_session"]);
        http.get(format!("{}{src}", app.addr))
            .header("cookie", cookie)
            .header("range", "bytes=100-199")
            .send()
            .await
            .expect("range request")
    };
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 100-199/1000");
    let bytes = part.bytes().await.expect("bytes");
    assert_eq!(bytes.len(), 100);
    assert_eq!(bytes[0], 100);

    // A recording URL elsewhere is never fetched with the account's credentials.
    let other = c
        .get(&format!("/console/calls/{}/recording", elsewhere.sid))
        .await;
    assert_eq!(other.status, 404);
    assert!(other.body.contains("the console does not fetch it"));
    // Signed-out listeners get nothing.
    let anon = ConsoleClient::new(&app).get(&src).await;
    assert_eq!(anon.status, 303);
}

/// `ivr users …` against the database at `url`, with `stdin` as its input.
fn ivr_users(url: &str, args: &[&str], stdin: &str) -> (bool, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_ivr"))
        .arg("users")
        .args(args)
        .env("IVR_DATABASE_URL", url)
        .env(
            "IVR_FLOWS_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/ivr_flows"),
        )
        .env("USER", "admin")
        .env("NO_COLOR", "1")
        .env_remove("IVR_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ivr users");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write the password");
    let out = child.wait_with_output().expect("ivr users");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[tokio::test]
async fn ivr_users_adds_changes_and_disables_accounts_from_the_command_line() {
    let dir = tempfile::tempdir().expect("dir");
    let db = std::sync::Arc::new(common::database::TestDb::new(dir.path(), None).await);
    let (ok, said) = ivr_users(
        &db.url,
        &["add", "dana", "--role", "manager"],
        &format!("{PASSWORD}\n"),
    );
    assert!(ok, "{said}");
    assert!(said.contains("added dana (manager)"), "{said}");
    let (ok, said) = ivr_users(&db.url, &["add", "dana"], &format!("{PASSWORD}\n"));
    assert!(!ok);
    assert!(
        said.contains("there is already an account \"dana\""),
        "{said}"
    );
    let (ok, said) = ivr_users(&db.url, &["add", "lee"], "short\n");
    assert!(!ok);
    assert!(said.contains("at least 12 characters"), "{said}");
    let (ok, said) = ivr_users(&db.url, &["add", "lee", "--role", "boss"], "");
    assert!(!ok);
    assert!(said.contains("role must be manager or agent"), "{said}");
    let (ok, said) = ivr_users(&db.url, &["add", "lee"], &format!("{PASSWORD}\n"));
    assert!(ok, "{said}");
    let (ok, said) = ivr_users(&db.url, &["list"], "");
    assert!(ok);
    assert_eq!(said, "dana\tmanager\tactive\nlee\tagent\tactive\n");

    // The hash on disk is argon2id, never the password.
    let argon2id = db
        .count(
            "SELECT count(*) FROM users WHERE name = 'dana' \
             AND substr(password_hash, 1, 10) = '$argon2id$'",
        )
        .await;
    assert_eq!(argon2id, 1, "dana's hash is argon2id");

    let app = spawn_with(Options {
        shared_db: Some(db.clone()),
        ..Options::default()
    })
    .await;
    let mut dana = ConsoleClient::signed_in(&app, "dana").await;
    let (ok, said) = ivr_users(
        &db.url,
        &["passwd", "dana"],
        "a new password, long enough\n",
    );
    assert!(ok, "{said}");
    assert_eq!(
        dana.get("/console/calls").await.status,
        303,
        "session ended"
    );
    assert_eq!(dana.sign_in("dana", PASSWORD).await.status, 401);
    assert_eq!(
        dana.sign_in("dana", "a new password, long enough")
            .await
            .status,
        303
    );
    let (ok, said) = ivr_users(&db.url, &["disable", "lee"], "");
    assert!(ok && said.contains("disabled lee"), "{said}");
    assert_eq!(
        ConsoleClient::new(&app)
            .sign_in("lee", PASSWORD)
            .await
            .status,
        401
    );
    let (ok, said) = ivr_users(&db.url, &["disable", "nobody"], "");
    assert!(
        !ok && said.contains("there is no account \"nobody\""),
        "{said}"
    );
    let audit = dana.get("/console/audit").await;
    for line in [
        "<td>cli:admin</td><td>user.add</td><td>dana (manager)</td>",
        "<td>cli:admin</td><td>user.passwd</td><td>dana</td>",
        "<td>cli:admin</td><td>user.disable</td><td>lee</td>",
    ] {
        assert!(audit.body.contains(line), "{line}: {}", audit.body);
    }
}

#[tokio::test]
async fn managers_set_the_hours_override_and_agents_see_it() {
    // Sunday morning: the schedule says closed.
    let app = spawn_at(sunday_morning()).await;
    add_user(&app, "mgr", "manager").await;
    add_user(&app, "agent.one", "agent").await;
    let mut mgr = ConsoleClient::signed_in(&app, "mgr").await;
    let page = mgr.get("/console/hours").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page
        .body
        .contains("Guest Care is <strong>closed</strong> now."));
    assert!(
        page.body.contains("<th scope=\"row\">Monday</th><td>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("America/Winnipeg"));

    let set = mgr
        .post(
            "/console/hours",
            &[("csrf", &page.csrf()), ("state", "open")],
        )
        .await;
    assert_eq!(set.status, 303, "{}", set.body);
    let page = mgr.get("/console/hours").await;
    assert!(page
        .body
        .contains("Guest Care is <strong>open</strong> now, by the override."));
    assert_eq!(app.api("/api/hours").await["state"], "open");
    // A caller now reaches the open menu.
    let call = app.call(GUEST_CARE).await;
    assert!(call.twiml.first("Gather").is_some(), "{}", call.xml);
    let audit = mgr.get("/console/audit").await;
    assert!(audit
        .body
        .contains("<td>mgr</td><td>hours.override</td><td>open</td>"));

    let mut agent = ConsoleClient::signed_in(&app, "agent.one").await;
    let seen = agent.get("/console/hours").await;
    assert!(seen.body.contains("Only managers can change it."));
    assert!(seen
        .body
        .contains("<strong class=\"override\">open</strong>"));
    let refused = agent
        .post(
            "/console/hours",
            &[("csrf", &seen.csrf()), ("state", "closed")],
        )
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(app.api("/api/hours").await["state"], "open");

    let bad = mgr
        .post(
            "/console/hours",
            &[("csrf", &page.csrf()), ("state", "maybe")],
        )
        .await;
    assert_eq!(bad.status, 400);
    let clear = mgr
        .post(
            "/console/hours",
            &[("csrf", &page.csrf()), ("state", "schedule")],
        )
        .await;
    assert_eq!(clear.status, 303);
    assert_eq!(app.api("/api/hours").await["state"], Value::Null);
}

/// The part of the insights page from the summary to the end.
fn figures_of(body: &str) -> String {
    body[body.find("<p class=\"summary\">").expect("summary")..].to_string()
}

#[tokio::test]
async fn insights_count_calls_outcomes_tickets_and_menu_drop_off_live_and_rolled_up() {
    let app = spawn_app().await;
    // Hung up in the store menu; in the legal menu; in the escalation queue; a voicemail.
    let hung_up = app.call_from_another(STORE).await;
    hung_up.completes(12).await;
    let mut legal = app.call_from_another(STORE).await;
    legal.press("7").await;
    legal.completes(20).await;
    let mut queued = app.call_from_another(GUEST_CARE).await;
    queued.press("5").await;
    queued.queue_ends("hangup").await;
    let mut summons = app.call_from_another(STORE).await;
    summons.press("7").await;
    summons.press("1").await;
    summons
        .leave_voicemail("https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE2")
        .await;
    add_user(&app, "agent.one", "agent").await;
    let mut c = ConsoleClient::signed_in(&app, "agent.one").await;

    let live = c.get("/console/insights").await;
    assert_eq!(live.status, 200, "{}", live.body);
    let body = &live.body;
    assert!(
        body.contains("<strong>4</strong> calls from 2026-11-17 to 2026-11-23."),
        "{body}"
    );
    assert!(body.contains("Abandoned in menus: <strong class=\"abandoned-menus\">2</strong>"));
    assert!(body.contains("in the escalation queue: <strong class=\"abandoned-queue\">1</strong>"));
    assert!(
        body.contains("<tr><th scope=\"row\">Follow-Up</th><td>2</td></tr>"),
        "{body}"
    );
    assert!(body.contains("<tr><th scope=\"row\">abandoned</th><td>2</td></tr>"));
    assert!(
        body.contains("<tr><th scope=\"row\">10</th><td>4</td></tr>"),
        "per hour"
    );
    assert!(
        body.contains("<tr><th scope=\"row\">23 Nov</th><td>4</td></tr>"),
        "per day"
    );
    // Three calls reached the store menu, two chose 7; one reached the legal menu, chose
    // nothing there; one reached it and chose 1.
    assert!(
        body.contains(
            "<tr><td><code>store.main</code></td><td>3</td><td>2</td><td>1</td><td>67%</td></tr>"
        ),
        "{body}"
    );
    assert!(body.contains(
        "<tr><td><code>legal.main</code></td><td>2</td><td>1</td><td>1</td><td>50%</td></tr>"
    ));
    assert!(body.contains("<svg class=\"chart\" role=\"img\""));

    // The flow picture: each flow drawn, each node with its calls of the last 7 days.
    let flows = c.get("/console/flows").await;
    assert_eq!(flows.status, 200, "{}", flows.body);
    assert!(flows.body.contains("<h2 id=\"flow-store-h\">store</h2>"));
    assert!(
        flows.body.contains(">main</text><text class=\"kind\" x=\""),
        "{}",
        flows.body
    );
    assert!(
        flows.body.contains(">menu · 3 calls</text>"),
        "{}",
        flows.body
    );
    assert!(flows
        .body
        .contains("<tr><td><code>legal.main</code></td><td>menu</td><td>2</td></tr>"));

    // Four hours later the hour is rolled up: the same figures, read from the roll-up.
    let state = app.state.clone().expect("state");
    app.clock.set(monday_morning() + chrono::Duration::hours(4));
    let hours = state
        .insights
        .roll_up(app.clock.now() - chrono::Duration::hours(3))
        .await
        .expect("roll up");
    assert!(hours >= 1);
    let mut c = ConsoleClient::signed_in(&app, "agent.one").await;
    let rolled = c
        .get("/console/insights?from=2026-11-17&to=2026-11-23")
        .await;
    assert_eq!(figures_of(&rolled.body), figures_of(&live.body));
    let rows = app
        .count("SELECT CAST(sum(calls) AS BIGINT) FROM call_hours")
        .await;
    assert_eq!(rows, 4);

    // Bad ranges are said on the page; a far year is refused, not a panic.
    for far in [
        "/console/insights?to=-262143-01-01",
        "/console/insights?from=99999-01-01",
        "/console/calls?from=-262143-01-01",
        "/console/calls?to=262142-12-31",
    ] {
        let page = c.get(far).await;
        assert_eq!(page.status, 400, "{far}");
        assert!(
            page.body.contains("must be like 2026-12-07"),
            "{far}: {}",
            page.body
        );
    }
    let backwards = c
        .get("/console/insights?from=2026-11-23&to=2026-11-01")
        .await;
    assert_eq!(backwards.status, 400);
    assert!(backwards.body.contains("The first day is after the last."));
    let long = c
        .get("/console/insights?from=2026-01-01&to=2026-11-23")
        .await;
    assert_eq!(long.status, 400);
    assert!(long.body.contains("Show at most 92 days at a time."));
}
