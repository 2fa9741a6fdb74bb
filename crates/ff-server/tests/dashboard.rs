//! The operator dashboard in a real browser: headless Chromium driven over WebDriver
//! (chromedriver, started by each test on a free port and killed at its end) against a server
//! on a fresh database, behind an API token. An operator logs in and sees the executions of two
//! lanes; a frame appended while an execution's page is open shows up on it live; a waiting
//! execution is cancelled with the button and the API agrees; a wrong token is refused; an
//! action without the CSRF token (or from another site) is refused and changes nothing.
//!
//! Needs Debian's `chromium` and `chromium-driver` packages (`/usr/bin/chromium`,
//! `/usr/bin/chromedriver`); `FF_CHROMEDRIVER` and `FF_CHROMIUM` name other binaries. Without
//! chromedriver the tests fail and say how to install it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use ff_backend_postgres::{MIGRATOR, PostgresBackend};
use ff_core::{
    CapabilitySet, ClaimPolicy, ExecutionBackend, ExecutionId, FlowId, Frame, FrameKind, Handle, LaneId, LeaseBackend,
    PartitionConfig, PublicState, StreamBackend, WaitpointId,
};
use ff_server::{Server, ServerConfig};
use ff_test::TestDb;
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const TOKEN: &str = "dashboard-test-token";
/// The longest wait for the browser to show something (a bound on a wait, not a timing check).
const PATIENCE: Duration = Duration::from_secs(20);

/// A server with an API token, on its own fresh database.
struct Site {
    _db: TestDb,
    server: Server,
    http: reqwest::Client,
}

impl Site {
    async fn start() -> Self {
        Self::start_with(Some(TOKEN)).await
    }

    /// A server behind `token` (`None`: open).
    async fn start_with(token: Option<&str>) -> Self {
        let db = TestDb::new(&MIGRATOR).await;
        let mut cfg = ServerConfig::new(db.url());
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.pool_size = 4;
        cfg.shutdown_grace_ms = 2_000;
        cfg.api_token = token.map(str::to_owned);
        let server = Server::start(cfg).await.expect("server starts");
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { _db: db, server, http }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    fn backend(&self) -> &Arc<PostgresBackend> {
        self.server.backend()
    }

    /// Submits an execution through the API; returns its id.
    async fn submit(&self, lane: &str, kind: &str) -> ExecutionId {
        let body = json!({"lane_id": lane, "execution_kind": kind, "input": {"to": "ops@example.com"}});
        let resp = self.http.post(self.url("/v1/executions")).bearer_auth(TOKEN).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let created: Value = resp.json().await.unwrap();
        ExecutionId::parse(created["execution_id"].as_str().unwrap()).unwrap()
    }

    /// Calls the API with the bearer token; returns the status and the JSON body (`Null` when
    /// empty).
    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
    }

    /// Claims the next execution of `lane` as worker instance `instance`.
    async fn claim(&self, lane: &str, instance: &str) -> Handle {
        let policy = ClaimPolicy::new("dashboard-test", instance, 600_000);
        self.backend()
            .claim(&LaneId::try_new(lane).unwrap(), &CapabilitySet::empty(), policy)
            .await
            .unwrap()
            .expect("an execution to claim")
    }

    async fn append(&self, handle: &Handle, text: &str) {
        let frame = Frame {
            bytes: text.as_bytes().to_vec(),
            kind: FrameKind::Stdout,
            frame_type: "log".into(),
            correlation_id: None,
            mode: ff_core::StreamMode::Durable,
        };
        self.backend().append_frame(handle, frame).await.unwrap();
    }

    async fn state(&self, id: &ExecutionId) -> PublicState {
        self.backend().read_execution_state(id).await.unwrap().expect("execution exists")
    }

    fn execution_path(id: &ExecutionId) -> String {
        format!("/dashboard/executions/{}", encode(&id.to_string()))
    }
}

/// Headless Chromium behind a chromedriver of its own, both ended on drop (the browser runs
/// in chromedriver's process group, and its profile in a directory of its own).
struct Browser {
    client: Client,
    driver: Child,
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver leads a process group holding Chromium and its helpers: end all of them,
        // whether the test finished or panicked, then remove the profile.
        if let Some(pid) = self.driver.id().and_then(|pid| i32::try_from(pid).ok()).filter(|pid| *pid > 1) {
            // SAFETY: kill(2) with a negative pid signals exactly the process group `pid`, which
            // chromedriver leads (it was started with `process_group(0)`); no memory is shared.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.driver.start_kill();
        // The killed processes may still be closing files in the profile for a moment.
        for _ in 0..40 {
            if std::fs::remove_dir_all(&self.profile).is_ok() || !self.profile.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Browser {
    async fn start() -> Self {
        let driver_path = chromedriver();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // Chromium's profile and scratch files all go in one directory, removed on drop.
        let profile = std::env::temp_dir().join(format!("ff-dashboard-chromium-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&profile).unwrap();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .env("TMPDIR", &profile)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_path.display()));
        let webdriver = format!("http://127.0.0.1:{port}");
        let mut options = json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1440,1000",
                format!("--user-data-dir={}", profile.join("profile").display()),
            ],
        });
        if let Some(chromium) = chromium() {
            options["binary"] = json!(chromium);
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), options);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let client = loop {
            match ClientBuilder::new(HttpConnector::new()).capabilities(caps.clone()).connect(&webdriver).await {
                Ok(client) => break client,
                // chromedriver may not be listening yet.
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("chromedriver at {webdriver} did not start a Chromium session: {e}"),
            }
        };
        Self { client, driver, profile }
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The text of the element `css` names, once there is one. Live updates replace elements
    /// under the reader's feet, so a reading of a replaced element is taken again.
    async fn text(&self, css: &str) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let read = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.text().await,
                Err(e) => Err(e),
            };
            match read {
                Ok(text) => return text,
                Err(e) if tokio::time::Instant::now() >= deadline => panic!("no readable {css}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    /// Waits until the page's text contains `needle`; returns the text.
    async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains(needle) {
                return text;
            }
            if tokio::time::Instant::now() >= deadline {
                let page = self.client.source().await.unwrap_or_default();
                panic!("{css} never showed {needle:?}; it shows {text:?}; the page:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn log_in(&self, site: &Site, token: &str) {
        self.goto(&site.url("/dashboard/login")).await;
        let field = self.client.wait().at_most(PATIENCE).for_element(Locator::Id("token")).await.unwrap();
        field.send_keys(token).await.unwrap();
        self.client.find(Locator::Id("login")).await.unwrap().click().await.unwrap();
    }

    async fn finish(self) {
        self.client.clone().close().await.unwrap();
    }
}

/// The chromedriver to use, or a failure that says how to install it.
fn chromedriver() -> PathBuf {
    let candidates = std::env::var_os("FF_CHROMEDRIVER").map(PathBuf::from).into_iter().chain(
        ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver", "/usr/local/bin/chromedriver"].map(PathBuf::from),
    );
    for path in candidates {
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "chromedriver not found: the dashboard's browser tests need headless Chromium and its WebDriver. \
         Install them with `apt-get install -y chromium chromium-driver` (Debian; .ci/run does this), \
         or set FF_CHROMEDRIVER (and FF_CHROMIUM) to the binaries."
    );
}

fn chromium() -> Option<String> {
    std::env::var("FF_CHROMIUM")
        .ok()
        .or_else(|| Path::new("/usr/bin/chromium").is_file().then(|| "/usr/bin/chromium".into()))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'-' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[tokio::test]
async fn an_operator_logs_in_and_sees_the_executions_of_two_lanes() {
    let site = Site::start().await;
    let mut mail = vec![];
    for _ in 0..3 {
        mail.push(site.submit("mail", "send_email").await);
    }
    let report = site.submit("reports", "build_report").await;
    site.submit("reports", "build_report").await;
    let _running = site.claim("reports", "worker-1").await;
    let browser = Browser::start().await;

    // Not logged in: every page leads to the login form.
    browser.goto(&site.url("/dashboard/executions")).await;
    assert_eq!(browser.path().await, "/dashboard/login");
    browser.log_in(&site, TOKEN).await;
    let lanes = browser.text("#lanes").await;
    assert_eq!(browser.path().await, "/dashboard/lanes");
    assert!(lanes.contains("mail") && lanes.contains("reports"), "{lanes}");
    let cookies = browser.client.get_all_cookies().await.unwrap();
    let session = cookies.iter().find(|c| c.name() == ff_server::dashboard::SESSION_COOKIE).expect("session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(format!("{:?}", session.same_site()), "Some(Strict)");
    assert_ne!(session.value(), TOKEN, "the token itself is not stored in the browser");
    let mail_row = browser.text("tr[data-lane='mail']").await;
    assert!(mail_row.split_whitespace().any(|w| w == "3"), "three waiting on mail: {mail_row}");
    // The counts follow live: a fourth submission shows up without a reload.
    browser.client.execute("window.ffMark = 'same page'; return null;", vec![]).await.unwrap();
    mail.push(site.submit("mail", "send_email").await);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let row = browser.text("tr[data-lane='mail']").await;
        if row.split_whitespace().any(|w| w == "4") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the mail row never showed 4: {row}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mark = browser.client.execute("return window.ffMark;", vec![]).await.unwrap();
    assert_eq!(mark, json!("same page"), "the counts changed without a reload");

    browser.goto(&site.url("/dashboard/executions")).await;
    let rows = browser.client.find_all(Locator::Css("tr.execution")).await.unwrap();
    assert_eq!(rows.len(), 6);
    let listed = browser.text("#executions").await;
    for id in mail.iter().chain([&report]) {
        assert!(listed.contains(&id.to_string()), "{id} listed");
    }
    browser.goto(&site.url("/dashboard/executions?lane=mail")).await;
    assert_eq!(browser.client.find_all(Locator::Css("tr.execution")).await.unwrap().len(), 4);
    browser.goto(&site.url("/dashboard/executions?lane=reports&state=active")).await;
    let active = browser.client.find_all(Locator::Css("tr.execution")).await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].attr("data-state").await.unwrap().as_deref(), Some("active"));
    browser.finish().await;
}

#[tokio::test]
async fn a_frame_appended_while_the_page_is_open_arrives_live() {
    let site = Site::start().await;
    site.submit("mail", "send_email").await;
    let id = site.submit("reports", "build_report").await;
    let handle = site.claim("reports", "worker-7").await;
    site.append(&handle, "loading 1,204 rows").await;
    let browser = Browser::start().await;
    browser.log_in(&site, TOKEN).await;
    browser.text("#lanes").await;
    browser.goto(&site.url(&Site::execution_path(&id))).await;
    browser.wait_for_text("#frame-rows", "loading 1,204 rows").await;
    assert!(browser.text("#attempts").await.contains("worker-7"));
    // Mark this page load: a reload would lose the mark.
    browser.client.execute("window.ffMark = 'same page'; return null;", vec![]).await.unwrap();
    site.append(&handle, "rendered page 3 of 9").await;
    let frames = browser.wait_for_text("#frame-rows", "rendered page 3 of 9").await;
    assert!(frames.contains("loading 1,204 rows"), "{frames}");
    let mark = browser.client.execute("return window.ffMark;", vec![]).await.unwrap();
    assert_eq!(mark, json!("same page"), "the frame arrived without a reload");
    assert_eq!(browser.client.find_all(Locator::Css("#frame-rows tr.frame")).await.unwrap().len(), 2);

    // The README's screenshot: taken on every run, written over `docs/dashboard.png` only when
    // asked (`UPDATE_SCREENSHOT=1`), so a test run leaves the checkout as it was.
    let png = browser.client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    if std::env::var_os("UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/dashboard.png");
        std::fs::write(&docs, png).unwrap();
    }
    browser.finish().await;
}

#[tokio::test]
async fn cancelling_a_waiting_execution_with_the_button() {
    let site = Site::start().await;
    let id = site.submit("mail", "send_email").await;
    let browser = Browser::start().await;
    browser.log_in(&site, TOKEN).await;
    browser.text("#lanes").await;
    browser.goto(&site.url(&Site::execution_path(&id))).await;
    assert_eq!(browser.text("#public-state").await, "waiting");
    browser.client.find(Locator::Id("cancel")).await.unwrap().click().await.unwrap();
    browser.client.accept_alert().await.unwrap();
    browser.wait_for_text("#notice", "cancelled").await;
    assert_eq!(browser.text("#public-state").await, "cancelled");
    assert_eq!(site.state(&id).await, PublicState::Cancelled);
    let resp = site.http.get(site.url(&format!("/v1/executions/{id}/state"))).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.text().await.unwrap();
    assert!(body.contains("cancelled"), "{body}");
    browser.finish().await;
}

#[tokio::test]
async fn a_wrong_token_is_refused() {
    let site = Site::start().await;
    let browser = Browser::start().await;
    browser.log_in(&site, "not-the-token").await;
    let error = browser.text("#login-error").await;
    assert!(error.contains("Wrong token"), "{error}");
    assert!(browser.client.get_all_cookies().await.unwrap().is_empty(), "no cookie is set");
    for page in ["/dashboard/lanes", "/dashboard/executions", "/dashboard/workers"] {
        browser.goto(&site.url(page)).await;
        assert_eq!(browser.path().await, "/dashboard/login", "{page}");
    }
    browser.finish().await;
    // Over plain HTTP: 401, no Set-Cookie; the health check stays open.
    let resp = site.http.post(site.url("/dashboard/login")).form(&[("token", "nope")]).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get("set-cookie").is_none());
    let health = site.http.get(site.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_action_without_the_csrf_token_or_from_another_site_is_refused() {
    let site = Site::start().await;
    let id = site.submit("mail", "send_email").await;
    let resp = site.http.post(site.url("/dashboard/login")).form(&[("token", TOKEN)]).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/dashboard"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let page = site.http.get(site.url(&Site::execution_path(&id))).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).unwrap().to_owned();
    let cancel = site.url(&format!("{}/cancel", Site::execution_path(&id)));
    let post = |form: Vec<(&'static str, String)>, origin: Option<&'static str>, cookie: Option<String>| {
        let mut req = site.http.post(&cancel).form(&form);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    let refusals = [
        (vec![], None, Some(cookie.clone()), StatusCode::FORBIDDEN),
        (vec![("csrf", "0".repeat(64))], None, Some(cookie.clone()), StatusCode::FORBIDDEN),
        (vec![("csrf", csrf.clone())], Some("https://evil.example"), Some(cookie.clone()), StatusCode::FORBIDDEN),
        (vec![("csrf", csrf.clone())], None, None, StatusCode::UNAUTHORIZED),
    ];
    for (form, origin, cookie, want) in refusals {
        let resp = post(form.clone(), origin, cookie).await.unwrap();
        assert_eq!(resp.status(), want, "{form:?} {origin:?}");
        assert_eq!(site.state(&id).await, PublicState::Waiting, "a refused action changes nothing");
    }
    let resp = post(vec![("csrf", csrf.clone())], None, Some(cookie.clone())).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(site.state(&id).await, PublicState::Cancelled);

    // Pages may not be framed by another site, nor run inline script.
    let page = site.http.get(site.url("/dashboard/lanes")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{csp}");
    // Logging out needs the CSRF token too, and clears the cookie.
    let logout = site.url("/dashboard/logout");
    let resp = site.http.post(&logout).header("cookie", &cookie).form(&[("csrf", "")]).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = site.http.post(&logout).header("cookie", &cookie).form(&[("csrf", csrf)]).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let cleared = resp.headers()["set-cookie"].to_str().unwrap();
    assert!(cleared.starts_with("ff_dashboard_session=;") && cleared.contains("Max-Age=0"), "{cleared}");
}

#[tokio::test]
async fn priority_revoke_and_replay_from_the_execution_page() {
    let site = Site::start().await;
    let id = site.submit("mail", "send_email").await;
    let _held = site.claim("mail", "worker-3").await;
    let browser = Browser::start().await;
    browser.log_in(&site, TOKEN).await;
    browser.text("#lanes").await;
    let page = site.url(&Site::execution_path(&id));
    browser.goto(&page).await;

    let priority = browser.client.find(Locator::Css("input[name=priority]")).await.unwrap();
    priority.clear().await.unwrap();
    priority.send_keys("70").await.unwrap();
    browser.client.find(Locator::Id("change-priority")).await.unwrap().click().await.unwrap();
    browser.wait_for_text("#notice", "Priority: changed").await;
    assert_eq!(browser.text("#priority").await, "70");
    let info = site.backend().read_execution_info(&id).await.unwrap().unwrap();
    assert_eq!(info.priority, 70);

    browser.client.find(Locator::Id("revoke-lease")).await.unwrap().click().await.unwrap();
    browser.client.accept_alert().await.unwrap();
    browser.wait_for_text("#notice", "Revoke lease: revoked").await;
    let snapshot = site.backend().describe_execution(&id).await.unwrap().unwrap();
    assert!(snapshot.current_lease.is_none(), "{snapshot:?}");

    browser.client.find(Locator::Id("cancel")).await.unwrap().click().await.unwrap();
    browser.client.accept_alert().await.unwrap();
    browser.wait_for_text("#notice", "Cancel: cancelled").await;
    browser.client.find(Locator::Id("replay")).await.unwrap().click().await.unwrap();
    browser.wait_for_text("#notice", "Replay: replayed").await;
    assert_eq!(site.state(&id).await, PublicState::Waiting);

    // A refused action says why, with the API's status: a replay of a live execution.
    let csrf =
        browser.client.find(Locator::Css("input[name=csrf]")).await.unwrap().prop("value").await.unwrap().unwrap();
    let cookie = browser.client.get_named_cookie(ff_server::dashboard::SESSION_COOKIE).await.unwrap();
    let resp = site
        .http
        .post(format!("{page}/replay"))
        .header("cookie", format!("{}={}", cookie.name(), cookie.value()))
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert!(resp.text().await.unwrap().contains("execution_not_terminal"));
    browser.finish().await;
}

#[tokio::test]
async fn the_workers_flows_and_suspensions_pages() {
    let site = Site::start().await;
    let registration =
        json!({"worker_instance_id": "media-1", "lanes": ["media"], "capabilities": ["gpu"], "liveness_ttl_ms": 30000});
    let (status, body) = site.api(reqwest::Method::POST, "/v1/workers/transcoders/instances", Some(registration)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // A diamond: 0 fans out to 1 and 2, which fan in to 3.
    let flow = FlowId::new();
    let ids: Vec<ExecutionId> = (0..4).map(|_| ExecutionId::for_flow(&flow, &PartitionConfig::default())).collect();
    let members: Vec<Value> = ids
        .iter()
        .zip(["extract", "transform_a", "transform_b", "load"])
        .map(|(id, kind)| json!({"execution_id": id, "lane_id": "etl", "execution_kind": kind, "input": {}}))
        .collect();
    let edges: Vec<Value> = [(0, 1), (0, 2), (1, 3), (2, 3)]
        .iter()
        .map(|&(u, d): &(usize, usize)| json!({"upstream_execution_id": ids[u], "downstream_execution_id": ids[d]}))
        .collect();
    let graph = json!({"flow": {"flow_id": flow, "flow_kind": "etl.nightly"}, "members": members, "edges": edges});
    let (status, body) = site.api(reqwest::Method::POST, "/v1/flows/graph", Some(graph)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // One execution suspended on a waitpoint `approval`.
    let waiting = site.submit("approvals", "publish").await;
    let claim = json!({"lane_id": "approvals", "worker_instance_id": "w1", "lease_ttl_ms": 600000});
    let (status, claimed) = site.api(reqwest::Method::POST, "/v1/workers/pool/claim", Some(claim)).await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    let c = &claimed["claimed"][0];
    let suspension = json!({
        "waitpoints": [{"fresh": {"waitpoint_id": WaitpointId::new().to_string(), "waitpoint_key": "approval"}}],
        "resume_condition": {"single": {"waitpoint_key": "approval", "matcher": {"by_name": "approved"}}},
        "reason_code": "waiting_for_approval",
    });
    let path = format!("/v1/executions/{waiting}/attempts/{}/suspend", c["attempt_index"]);
    let (status, out) =
        site.api(reqwest::Method::POST, &path, Some(json!({"handle": c["handle"], "suspension": suspension}))).await;
    assert_eq!(status, StatusCode::OK, "{out}");

    let browser = Browser::start().await;
    browser.log_in(&site, TOKEN).await;
    browser.text("#lanes").await;
    browser.goto(&site.url("/dashboard/workers")).await;
    let workers = browser.text("#workers").await;
    assert!(workers.contains("media-1") && workers.contains("transcoders") && workers.contains("gpu"), "{workers}");

    browser.goto(&site.url("/dashboard/flows")).await;
    assert!(browser.text("#flows").await.contains("etl.nightly"));
    browser.client.find(Locator::Css("#flows a")).await.unwrap().click().await.unwrap();
    browser.client.wait().at_most(PATIENCE).for_element(Locator::Id("flow-graph")).await.unwrap();
    assert_eq!(browser.client.find_all(Locator::Css("#flow-graph g.node")).await.unwrap().len(), 4);
    assert_eq!(browser.client.find_all(Locator::Css("#flow-graph line.edge")).await.unwrap().len(), 4);
    let graph = browser.text("#flow-graph").await;
    for kind in ["extract", "transform_a", "transform_b", "load"] {
        assert!(graph.contains(kind), "{kind} drawn: {graph}");
    }

    browser.goto(&site.url("/dashboard/suspensions")).await;
    let suspended = browser.text("#suspensions").await;
    assert!(suspended.contains(&waiting.to_string()) && suspended.contains("approval"), "{suspended}");
    assert!(suspended.contains("approved"), "the signal it waits for: {suspended}");
    browser.goto(&site.url(&Site::execution_path(&waiting))).await;
    assert_eq!(browser.text("#public-state").await, "suspended");
    browser.finish().await;
}

/// Logs in over plain HTTP; returns the session cookie (`name=value`).
async fn session_cookie(site: &Site) -> String {
    let resp = site.http.post(site.url("/dashboard/login")).form(&[("token", TOKEN)]).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    resp.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_page() {
    let site = Site::start().await;
    let id = site.submit("mail", "send_email").await;
    let cookie = session_cookie(&site).await;
    let missing = ExecutionId::for_flow(&FlowId::new(), &PartitionConfig::default());
    let cases = [
        ("/dashboard/executions?state=sleeping".to_owned(), StatusCode::BAD_REQUEST, "unknown state"),
        ("/dashboard/executions?limit=0".to_owned(), StatusCode::BAD_REQUEST, "page size 0"),
        ("/dashboard/executions?before=x".to_owned(), StatusCode::BAD_REQUEST, ""),
        ("/dashboard/executions/not-an-id".to_owned(), StatusCode::BAD_REQUEST, "not-an-id"),
        (Site::execution_path(&missing), StatusCode::NOT_FOUND, "no execution"),
        ("/dashboard/flows/not-a-flow".to_owned(), StatusCode::BAD_REQUEST, ""),
        (format!("/dashboard/flows/{}", FlowId::new()), StatusCode::NOT_FOUND, "no flow"),
        (format!("{}/frames?attempt=7", Site::execution_path(&id)), StatusCode::OK, "event: failed"),
        ("/dashboard/assets/secret.txt".to_owned(), StatusCode::NOT_FOUND, "no such asset"),
    ];
    for (path, want, says) in cases {
        let resp = site.http.get(site.url(&path)).header("cookie", &cookie).send().await.unwrap();
        assert_eq!(resp.status(), want, "{path}");
        let body = resp.text().await.unwrap();
        assert!(body.contains(says), "{path}: {body}");
    }
    let csrf = {
        let html = site.http.get(site.url("/dashboard/lanes")).header("cookie", &cookie).send().await.unwrap();
        let html = html.text().await.unwrap();
        html.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).unwrap().to_owned()
    };
    let priority = site.url(&format!("{}/priority", Site::execution_path(&id)));
    for (value, want, says) in [
        ("high", StatusCode::BAD_REQUEST, "not a whole number"),
        ("9001", StatusCode::BAD_REQUEST, "priority_out_of_range"),
    ] {
        let form = [("csrf", csrf.as_str()), ("priority", value)];
        let resp = site.http.post(&priority).header("cookie", &cookie).form(&form).send().await.unwrap();
        assert_eq!(resp.status(), want, "{value}");
        assert!(resp.text().await.unwrap().contains(says), "{value}");
    }
    let info = site.backend().read_execution_info(&id).await.unwrap().unwrap();
    assert_eq!(info.priority, 0, "a refused change writes nothing");
}

#[tokio::test]
async fn without_a_token_the_dashboard_is_open_but_actions_still_need_the_csrf_token() {
    let site = Site::start_with(None).await;
    let id = site.submit("mail", "send_email").await;
    let page = site.http.get(site.url("/dashboard/lanes")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("without an API token"), "the warning banner");
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).map(str::to_owned);
    assert!(csrf.is_none(), "no logout form when there is no login");
    let page = site.http.get(site.url(&Site::execution_path(&id))).send().await.unwrap().text().await.unwrap();
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).unwrap().to_owned();
    let cancel = site.url(&format!("{}/cancel", Site::execution_path(&id)));
    let resp = site.http.post(&cancel).form(&[("reason", "no csrf")]).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(site.state(&id).await, PublicState::Waiting);
    let resp = site.http.post(&cancel).form(&[("csrf", csrf)]).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(site.state(&id).await, PublicState::Cancelled);
}
