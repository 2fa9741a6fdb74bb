//! Dashboard sessions and CSRF protection.
//!
//! The dashboard sits behind the API's bearer token. The login form takes the token; when it is
//! right, the answer sets the session cookie [`SESSION_COOKIE`] (`HttpOnly`, `SameSite=Strict`,
//! `Path=/dashboard`, `Secure` over HTTPS) holding a random nonce and its HMAC under the token:
//! the browser never stores the token itself, and changing the token ends every session. A
//! wrong token is refused with `401` and sets no cookie; a page requested without a valid
//! session redirects to the login form.
//!
//! Every action (a `POST`) must carry the session's CSRF token, the HMAC of the nonce under the
//! token with its own label, embedded in the page's forms; and, when the browser says where the
//! request comes from (`Sec-Fetch-Site`, `Origin`), it must come from this origin. Otherwise it
//! is refused with `403` and nothing is done.
//!
//! Without a configured token the API is open, and so is the dashboard: no login, every page
//! shown (with a warning banner); actions still require the CSRF token, keyed by a random
//! secret drawn at start, so another site cannot drive them through a visitor's browser.

use axum::Form;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use hmac::{Hmac, Mac};
use minijinja::context;
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{DashboardState, PageError, render};

/// The name of the dashboard's session cookie.
pub const SESSION_COOKIE: &str = "ff_dashboard_session";

/// How the dashboard authenticates: the HMAC key (the API token, or a random secret when the
/// server runs open) and whether a login is required.
pub(super) struct Auth {
    key: Vec<u8>,
    required: bool,
    secure: bool,
}

impl Auth {
    pub(super) fn new(token: Option<&str>, secure: bool) -> Self {
        match token.filter(|t| !t.is_empty()) {
            Some(token) => Self { key: token.as_bytes().to_vec(), required: true, secure },
            None => Self { key: rand::random::<[u8; 32]>().to_vec(), required: false, secure },
        }
    }

    fn mac(&self, label: &str, nonce: &str) -> String {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(label.as_bytes());
        mac.update(b":");
        mac.update(nonce.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The session of a request: its nonce when the cookie is valid (or no login is required).
    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        if !self.required {
            return Some(Session { csrf: self.mac("csrf", "open"), open: true });
        }
        let value = cookie(headers, SESSION_COOKIE)?;
        let (nonce, mac) = value.split_once('.')?;
        let expected = self.mac("session", nonce);
        if !bool::from(expected.as_bytes().ct_eq(mac.as_bytes())) {
            return None;
        }
        Some(Session { csrf: self.mac("csrf", nonce), open: false })
    }

    fn matches_token(&self, presented: &str) -> bool {
        // HMACs of one length compared in constant time: the timing reveals nothing of the token.
        let expected = self.mac("login", "");
        let mut mac = <Hmac<Sha256>>::new_from_slice(presented.as_bytes()).expect("HMAC takes any key length");
        mac.update(b"login:");
        bool::from(hex::encode(mac.finalize().into_bytes()).as_bytes().ct_eq(expected.as_bytes()))
    }

    fn session_cookie(&self, value: &str, max_age: Option<u32>) -> String {
        let mut cookie = format!("{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/dashboard");
        if let Some(age) = max_age {
            cookie.push_str(&format!("; Max-Age={age}"));
        }
        if self.secure {
            cookie.push_str("; Secure");
        }
        cookie
    }
}

/// A request's dashboard session (extracting it redirects to the login form when there is
/// none).
pub(super) struct Session {
    /// The CSRF token that this session's forms carry.
    pub(super) csrf: String,
    /// True when the server runs without a token (no login).
    pub(super) open: bool,
}

impl Session {
    /// Checks an action: the form's CSRF token and, when the browser tells, the request's
    /// origin. `Err` is the refusal to send back.
    pub(super) fn check_action(&self, headers: &HeaderMap, csrf: &str) -> Result<(), PageError> {
        if !same_origin(headers) {
            return Err(PageError::status(StatusCode::FORBIDDEN, "refused: the request comes from another site"));
        }
        if csrf.is_empty() || !bool::from(csrf.as_bytes().ct_eq(self.csrf.as_bytes())) {
            return Err(PageError::status(
                StatusCode::FORBIDDEN,
                "refused: the form's CSRF token is missing or wrong (reload the page and try again)",
            ));
        }
        Ok(())
    }
}

impl FromRequestParts<DashboardState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &DashboardState) -> Result<Self, Self::Rejection> {
        if let Some(session) = state.auth().session(&parts.headers) {
            return Ok(session);
        }
        if parts.method == Method::GET && !wants_event_stream(&parts.headers) {
            let next = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/dashboard/lanes");
            let target = format!("/dashboard/login?next={}", super::percent_encode(next));
            return Err(Redirect::to(&target).into_response());
        }
        Err(PageError::status(StatusCode::UNAUTHORIZED, "log in first").into_response())
    }
}

#[derive(Deserialize)]
pub(super) struct LoginQuery {
    next: Option<String>,
}

/// `GET /dashboard/login`: the login form (or straight through when no login is needed).
pub(super) async fn login_form(
    State(state): State<DashboardState>,
    Query(q): Query<LoginQuery>,
    headers: HeaderMap,
) -> Response {
    if state.auth().session(&headers).is_some() {
        return Redirect::to(&safe_next(q.next.as_deref())).into_response();
    }
    login_page(StatusCode::OK, q.next.as_deref(), None)
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    token: String,
    next: Option<String>,
}

/// `POST /dashboard/login`: sets the session cookie when the token is the API's.
pub(super) async fn login(
    State(state): State<DashboardState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !same_origin(&headers) {
        return PageError::status(StatusCode::FORBIDDEN, "refused: the request comes from another site")
            .into_response();
    }
    let auth = state.auth();
    if !auth.required {
        return Redirect::to(&safe_next(form.next.as_deref())).into_response();
    }
    if !auth.matches_token(&form.token) {
        return login_page(
            StatusCode::UNAUTHORIZED,
            form.next.as_deref(),
            Some("Wrong token: that is not this server's API token (FF_API_TOKEN)."),
        );
    }
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let value = format!("{nonce}.{}", auth.mac("session", &nonce));
    let mut response = Redirect::to(&safe_next(form.next.as_deref())).into_response();
    if let Ok(cookie) = auth.session_cookie(&value, None).parse() {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

#[derive(Deserialize)]
pub(super) struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /dashboard/logout`: clears the session cookie.
pub(super) async fn logout(
    State(state): State<DashboardState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if let Err(refused) = session.check_action(&headers, &form.csrf) {
        return refused.into_response();
    }
    let mut response = Redirect::to("/dashboard/login").into_response();
    if let Ok(cookie) = state.auth().session_cookie("", Some(0)).parse() {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

fn login_page(status: StatusCode, next: Option<&str>, error: Option<&str>) -> Response {
    match render("login.html", context! { next => safe_next(next), error => error }) {
        Ok(page) => (status, page).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Where to go after logging in: a dashboard path, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/dashboard") && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/dashboard/lanes".to_owned(),
    }
}

/// False when the browser says the request comes from another site.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    match (headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()), headers.get(header::HOST)) {
        (Some("null"), _) => false,
        (Some(origin), Some(host)) => {
            let host = host.to_str().unwrap_or_default();
            origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host)
        }
        _ => true,
    }
}

fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/event-stream"))
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_session_is_valid_only_with_its_own_mac() {
        let auth = Auth::new(Some("secret"), false);
        let nonce = "abc";
        let good = format!("{SESSION_COOKIE}={nonce}.{}", auth.mac("session", nonce));
        let session = auth.session(&headers(&[("cookie", &good)])).expect("valid session");
        assert_eq!(session.csrf, auth.mac("csrf", nonce));
        let other = Auth::new(Some("other"), false);
        assert!(other.session(&headers(&[("cookie", &good)])).is_none(), "another token's session");
        let forged = format!("{SESSION_COOKIE}={nonce}.{}", auth.mac("csrf", nonce));
        assert!(auth.session(&headers(&[("cookie", &forged)])).is_none(), "a CSRF token is not a session");
        assert!(auth.session(&HeaderMap::new()).is_none());
    }

    #[test]
    fn the_token_is_checked_exactly() {
        let auth = Auth::new(Some("secret"), false);
        assert!(auth.matches_token("secret"));
        for wrong in ["", "secre", "secret ", "Secret"] {
            assert!(!auth.matches_token(wrong), "{wrong:?}");
        }
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        assert!(same_origin(&headers(&[])));
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin"), ("origin", "http://h:1"), ("host", "h:1")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[("origin", "http://evil"), ("host", "h:1")])));
        assert!(!same_origin(&headers(&[("origin", "null"), ("host", "h:1")])));
    }

    #[test]
    fn next_stays_on_the_dashboard() {
        assert_eq!(safe_next(Some("/dashboard/executions?lane=a")), "/dashboard/executions?lane=a");
        for bad in [Some("https://evil/"), Some("//evil"), Some("/v1/executions"), None] {
            assert_eq!(safe_next(bad), "/dashboard/lanes", "{bad:?}");
        }
    }

    #[test]
    fn cookies_are_found_by_name() {
        let h = headers(&[("cookie", "a=1; ff_dashboard_session=n.m"), ("cookie", "b=2")]);
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("n.m"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
