//! The dashboard in a real browser: headless Chromium (Debian's `chromium`, driven through
//! `chromedriver` over WebDriver) logs in with the server token, sees the activations, presses
//! "Run now" and sees the finished run's counts. A screenshot of that page is saved under
//! `target/`.
//!
//! `cargo xtask test` (and CI) install `chromium` and `chromium-driver` when they are missing.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use attentive_sim::SimConfig;
use fantoccini::{Client, ClientBuilder, Locator};

use crate::server::{model, project};
use crate::support::{seed, start_sim, SERVER_TOKEN};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Kills chromedriver (and the browser it started) when the test ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_chromedriver() -> (Driver, String) {
    for tool in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            std::path::Path::new(tool).exists(),
            "{tool} is missing: the browser test needs Debian's chromium and chromium-driver \
             (`apt-get install chromium chromium-driver`; `cargo xtask test` and .ci/run install them)"
        );
    }
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver(child);
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = reqwest::blocking::get(format!("{url}/status"))
            .ok()
            .and_then(|r| r.json::<serde_json::Value>().ok())
            .is_some_and(|v| v["value"]["ready"] == true);
        if ready {
            return (driver, url);
        }
        assert!(Instant::now() < deadline, "chromedriver did not get ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn browser(webdriver: &str) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1000"],
        }),
    );
    // Plain HTTP to chromedriver on loopback: no TLS.
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(webdriver)
        .await
        .expect("a WebDriver session with headless Chromium")
}

/// Waits for `css` to be on the page (the page may reload itself meanwhile).
async fn wait_for(c: &Client, css: &str, within: Duration) -> fantoccini::elements::Element {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            return e;
        }
        if Instant::now() > deadline {
            let source = c.source().await.unwrap_or_default();
            panic!("`{css}` did not appear within {within:?}; the page:\n{source}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn screenshot_path() -> PathBuf {
    // `<target>/tmp` for integration tests: under `target/`.
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-run.png")
}

#[test]
fn a_browser_logs_in_runs_an_activation_and_sees_its_counts() {
    const N: usize = 12;
    let emails: Vec<String> = (0..N).map(|i| format!("p{i}@example.com")).collect();
    let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
    let sim = start_sim(SimConfig {
        contacts: seed(&refs),
        ..SimConfig::default()
    });
    // Twelve known contacts and one row with a bad email: 12 updated, 1 rejected.
    let p = project(&sim, &model(N, "not-an-email,Austin,tier-1\n"));
    let server = p.serve(&[]);
    let (_driver, webdriver) = start_chromedriver();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (run_url, updated, rejected, png) = runtime.block_on(async {
        let c = browser(&webdriver).await;
        // Not logged in: the dashboard asks for the token.
        c.goto(&server.url("/")).await.expect("open the dashboard");
        let token = wait_for(&c, "#token", Duration::from_secs(10)).await;
        assert!(c.current_url().await.unwrap().path().ends_with("/login"));
        token.send_keys(SERVER_TOKEN).await.expect("type the token");
        c.find(Locator::Css("#login"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();

        // The activations, with "Run now" and "Preview plan".
        let run_now = wait_for(&c, "#run-now-a", Duration::from_secs(10)).await;
        wait_for(&c, "#preview-plan-a", Duration::from_secs(1)).await;
        let body = c
            .find(Locator::Css("body"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.contains("Activations"), "{body}");
        run_now.click().await.expect("press Run now");

        // The run page refreshes itself until the run ends.
        wait_for(
            &c,
            ".status-succeeded, .status-partial",
            Duration::from_secs(60),
        )
        .await;
        let count = |class: &'static str| {
            let c = c.clone();
            async move {
                c.find(Locator::Css(&format!(".count.count-{class} .value")))
                    .await
                    .unwrap_or_else(|_| panic!("no {class} count on the run page"))
                    .text()
                    .await
                    .unwrap()
            }
        };
        let (updated, rejected) = (count("updated").await, count("rejected").await);
        let run_url = c.current_url().await.unwrap().to_string();
        let png = c.screenshot().await.expect("screenshot");
        c.close().await.expect("close the browser");
        (run_url, updated, rejected, png)
    });

    assert_eq!(updated, N.to_string());
    assert_eq!(rejected, "1");
    // The page shows what the API reports for that run.
    let id = run_url.rsplit('/').next().unwrap();
    let (status, run) = server.get_json(&format!("/api/v1/runs/{id}"));
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["report"]["counts"]["updated"], N as u64, "{run}");
    assert_eq!(run["report"]["counts"]["rejected"], 1, "{run}");
    assert_eq!(run["status"], "partial", "{run}");

    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = screenshot_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

/// Logs in with the server token.
async fn log_in(c: &Client, server: &crate::support::Server) {
    c.goto(&server.url("/login"))
        .await
        .expect("open the login page");
    let token = wait_for(c, "#token", Duration::from_secs(10)).await;
    token.send_keys(SERVER_TOKEN).await.expect("type the token");
    c.find(Locator::Css("#login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(c, "#activations", Duration::from_secs(10)).await;
}

fn save_png(name: &str, png: &[u8]) -> PathBuf {
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
    path
}

/// Issue 15: an activation's page charts its last runs (one bar per run), the activations
/// page shows the alert that fires, and a contact can be looked up: per activation, each
/// attribute with the run that set it, and whether the contact exists.
#[test]
fn the_dashboard_charts_the_last_runs_and_looks_a_contact_up() {
    const N: usize = 8;
    let emails: Vec<String> = (0..N).map(|i| format!("p{i}@example.com")).collect();
    let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
    let sim = start_sim(SimConfig {
        contacts: seed(&refs),
        ..SimConfig::default()
    });
    // A contact Attentive does not have, and a bad row.
    let extra = "ghost@example.com,Reno,tier-9\nnot-an-email,Austin,tier-1\n";
    let p = project(&sim, &model(N, extra));
    // Three runs with something to send each time.
    for round in 0..3 {
        p.write(
            "data/m.csv",
            &model(N, extra).replace("tier-", &format!("t{round}-")),
        );
        let (r, report) = p.sync_with(attentive_sim::DEFAULT_KEY, &[]);
        assert_eq!(r.code, 3, "{}", r.all());
        assert_eq!(report["counts"]["updated"], N as u64, "{report}");
    }
    let server = p.serve(&[]);
    let (_driver, webdriver) = start_chromedriver();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let c = browser(&webdriver).await;
        log_in(&c, &server).await;
        // The activations page: the rule that fires (rows rejected) is shown.
        let alerts = wait_for(&c, "#activation-a td.alerts", Duration::from_secs(5)).await;
        assert_eq!(
            alerts.attr("data-firing").await.unwrap().as_deref(),
            Some("2")
        );
        let text = alerts.text().await.unwrap();
        assert!(
            text.contains("rows_rejected") && text.contains("rows_not_found"),
            "{text}"
        );
        save_png("dashboard-activations.png", &c.screenshot().await.unwrap());
        c.find(Locator::Css("#activation-a .name a"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();

        // The activation's page: a chart with one bar per run.
        let chart = wait_for(&c, "svg#run-chart", Duration::from_secs(10)).await;
        assert_eq!(chart.attr("data-runs").await.unwrap().as_deref(), Some("3"));
        let bars = c
            .find_all(Locator::Css("#run-chart .chart-run"))
            .await
            .unwrap();
        assert_eq!(bars.len(), 3);
        let mut ids = Vec::new();
        for b in &bars {
            ids.push(b.attr("data-run-id").await.unwrap().unwrap());
        }
        assert_eq!(ids, ["1", "2", "3"], "oldest first");
        let firing = c
            .find(Locator::Css("#alerts .alert-rows_rejected"))
            .await
            .unwrap();
        assert_eq!(
            firing.attr("data-state").await.unwrap().as_deref(),
            Some("firing")
        );
        save_png("dashboard-chart.png", &c.screenshot().await.unwrap());

        // The contact lookup.
        c.goto(&server.url("/contacts")).await.unwrap();
        let q = wait_for(&c, "#contact-query", Duration::from_secs(5)).await;
        q.send_keys("  P1@Example.com ").await.unwrap();
        c.find(Locator::Css("#lookup"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let result = wait_for(&c, "#contact-result", Duration::from_secs(10)).await;
        assert_eq!(
            result.attr("data-contact").await.unwrap().as_deref(),
            Some("p1@example.com")
        );
        let existence = c
            .find(Locator::Css(
                ".contact-activation[data-activation=a] .existence",
            ))
            .await
            .unwrap();
        assert_eq!(
            existence.attr("data-existence").await.unwrap().as_deref(),
            Some("exists")
        );
        let tier = c
            .find(Locator::Css(
                ".contact-activation[data-activation=a] .attribute[data-key='custom:Tier']",
            ))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(tier.contains("t2-1") && tier.contains("run #3"), "{tier}");
        let city = c
            .find(Locator::Css(".attribute[data-key='std:city']"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(city.contains("run #1"), "set by the first run: {city}");
        save_png("dashboard-contact.png", &c.screenshot().await.unwrap());

        // A contact Attentive does not have: not found, nothing in the snapshot.
        c.goto(&server.url("/contacts?q=ghost%40example.com"))
            .await
            .unwrap();
        wait_for(&c, "#contact-result", Duration::from_secs(10)).await;
        let existence = c.find(Locator::Css(".existence")).await.unwrap();
        assert_eq!(
            existence.attr("data-existence").await.unwrap().as_deref(),
            Some("not_found")
        );
        assert!(c
            .find_all(Locator::Css(".attribute"))
            .await
            .unwrap()
            .is_empty());
        // Not an email or a phone: said so.
        c.goto(&server.url("/contacts?q=nobody")).await.unwrap();
        wait_for(&c, "#flash", Duration::from_secs(10)).await;
        c.close().await.expect("close the browser");
    });
}
