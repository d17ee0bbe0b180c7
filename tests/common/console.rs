//! A console user over HTTP: signs in as a browser does (the sign-in form's token, then the
//! session cookie), keeps the cookies it is given, and reads pages as they are served.

use super::TestApp;
use reqwest::header::HeaderMap;
use std::collections::BTreeMap;

/// A password long enough for the console.
pub const PASSWORD: &str = "correct horse battery staple";

/// One answer of the console.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    /// Every `Set-Cookie` line.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    }

    /// The value of the first `name="csrf"` form field on the page.
    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no form token on the page: {}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').expect("end of the token")].to_string()
    }
}

/// Adds a console account straight into the server's database.
pub async fn add_user(app: &TestApp, name: &str, role: &str) {
    let state = app.state.as_ref().expect("in-process server");
    ivr::console::accounts::add_user(
        state.console.as_ref(),
        name,
        ivr::storage::console::Role::parse(role).expect("role"),
        PASSWORD,
        "test",
        app.clock.now(),
    )
    .await
    .expect("add the account");
}

/// A console user: its own cookie jar, redirects not followed (so that the tests see them).
pub struct ConsoleClient {
    addr: String,
    http: reqwest::Client,
    pub cookies: BTreeMap<String, String>,
}

impl ConsoleClient {
    pub fn new(app: &TestApp) -> Self {
        Self::at(&app.addr)
    }

    /// A user of the server at `addr`.
    pub fn at(addr: &str) -> Self {
        Self {
            addr: addr.to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("HTTP client"),
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = if self.cookies.is_empty() {
            req
        } else {
            req.header("cookie", self.cookie_header())
        };
        let res = req.send().await.expect("console request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.text().await.expect("body");
        let page = Page {
            status,
            headers,
            body,
        };
        for line in page.set_cookies() {
            let first = line.split(';').next().unwrap_or_default();
            if let Some((k, v)) = first.split_once('=') {
                if v.is_empty() || line.contains("Max-Age=0") {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_string(), v.to_string());
                }
            }
        }
        page
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.addr));
        self.send(req).await
    }

    /// GET with htmx's request header, as the page's own links and forms send it.
    pub async fn htmx_get(&mut self, path: &str) -> Page {
        let req = self
            .http
            .get(format!("{}{path}", self.addr))
            .header("HX-Request", "true");
        self.send(req).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self.http.post(format!("{}{path}", self.addr)).form(form);
        self.send(req).await
    }

    /// Signs in through the sign-in form; the answer to the form's POST.
    pub async fn sign_in(&mut self, name: &str, password: &str) -> Page {
        let form = self.get("/console/login").await;
        assert_eq!(form.status, 200, "{}", form.body);
        let csrf = form.csrf();
        self.post(
            "/console/login",
            &[("csrf", &csrf), ("name", name), ("password", password)],
        )
        .await
    }

    /// Signs in and expects to land on the call log.
    pub async fn signed_in(app: &TestApp, name: &str) -> Self {
        let mut c = Self::new(app);
        let res = c.sign_in(name, PASSWORD).await;
        assert_eq!(res.status, 303, "{}", res.body);
        assert_eq!(res.header("location"), "/console/calls");
        c
    }
}
