//! `report.html` in a real browser: headless Chromium driven over the DevTools
//! protocol (through `--remote-debugging-pipe`: NUL-separated JSON on fds 3 and 4, so
//! no WebSocket client is needed). The page must load with no console errors, no
//! failed loads, no script dialogs (the escaping test's payloads), and every figure
//! and sample grid must have a non-zero size. A full-page screenshot is saved.
//!
//! Skipped when no Chromium is installed, unless DITBENCH_REQUIRE_CHROMIUM=1 (CI),
//! where a missing browser fails the test. Debian: `apt-get install -y chromium`.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn find_chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("DITBENCH_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for name in ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

struct Cdp {
    child: Child,
    stdin: ChildStdin,
    rx: mpsc::Receiver<Value>,
    next_id: u64,
    session: Option<String>,
    /// Every event received, in order.
    events: Vec<Value>,
}

const WAIT: Duration = Duration::from_secs(60);

impl Cdp {
    fn launch(bin: &Path, profile: &Path) -> Cdp {
        // fd 3 ← our pipe into the browser, fd 4 → our pipe out of it.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(
                "exec \"$0\" --headless --no-sandbox --disable-gpu --no-first-run \
                 --no-default-browser-check --hide-scrollbars --mute-audio \
                 --remote-debugging-pipe --user-data-dir=\"$1\" about:blank \
                 3<&0 4>&1 0</dev/null 1>&2",
            )
            .arg(bin)
            .arg(profile)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromium");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1 << 16];
            loop {
                let n = match stdout.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                while let Some(pos) = buf.iter().position(|&b| b == 0) {
                    let msg: Vec<u8> = buf.drain(..=pos).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&msg[..msg.len() - 1]) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Cdp { child, stdin, rx, next_id: 0, session: None, events: Vec::new() }
    }

    fn recv(&mut self, deadline: Instant) -> Value {
        let left = deadline.saturating_duration_since(Instant::now());
        self.rx.recv_timeout(left).expect("chromium stopped answering (DevTools pipe)")
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.stdin.write_all(&bytes).unwrap();
        self.stdin.flush().unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.recv(deadline);
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
            self.events.push(v);
        }
    }

    fn wait_event(&mut self, method: &str) {
        if self.events.iter().any(|e| e["method"] == method) {
            return;
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.recv(deadline);
            let hit = v["method"] == method;
            self.events.push(v);
            if hit {
                return;
            }
        }
    }

    fn open_page(bin: &Path, profile: &Path) -> Cdp {
        let mut c = Cdp::launch(bin, profile);
        let t = c.call("Target.createTarget", json!({"url": "about:blank"}));
        let s = c.call("Target.attachToTarget", json!({"targetId": t["targetId"], "flatten": true}));
        c.session = Some(s["sessionId"].as_str().unwrap().to_string());
        for m in ["Runtime.enable", "Log.enable", "Page.enable"] {
            c.call(m, json!({}));
        }
        c.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        );
        c
    }

    /// Navigates and waits for the load event; returns the events of this page load.
    fn load(&mut self, url: &str) -> Vec<Value> {
        self.events.clear();
        self.call("Page.navigate", json!({"url": url}));
        self.wait_event("Page.loadEventFired");
        // let late console messages arrive
        let _ = self.eval("new Promise(r => setTimeout(() => r(1), 300))");
        self.events.clone()
    }

    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {}", r["exceptionDetails"]);
        r["result"]["value"].clone()
    }

    fn screenshot(&mut self, path: &Path) {
        let h = self.eval("document.documentElement.scrollHeight").as_f64().unwrap();
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1200, "height": h.min(16000.0) as i64, "deviceScaleFactor": 1, "mobile": false}),
        );
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64_decode(r["data"].as_str().unwrap());
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        std::fs::write(path, png).unwrap();
    }

    fn close(mut self) {
        self.session = None;
        self.next_id += 1;
        let msg = format!("{{\"id\":{},\"method\":\"Browser.close\"}}\0", self.next_id);
        let _ = self.stdin.write_all(msg.as_bytes());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("bad base64 byte {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=' && !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= u32::from(val(c)) << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// Console errors, uncaught exceptions, failed loads and dialogs among `events`.
fn problems(events: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for e in events {
        let p = &e["params"];
        match e["method"].as_str().unwrap_or("") {
            "Runtime.consoleAPICalled" if ["error", "assert"].contains(&p["type"].as_str().unwrap_or("")) => {
                out.push(format!("console.{}: {}", p["type"], p["args"]))
            }
            "Runtime.exceptionThrown" => out.push(format!("exception: {}", p["exceptionDetails"])),
            "Log.entryAdded" if p["entry"]["level"] == "error" => {
                out.push(format!("log error: {} {}", p["entry"]["text"], p["entry"]["url"]))
            }
            "Page.javascriptDialogOpening" => out.push(format!("dialog opened: {}", p["message"])),
            _ => {}
        }
    }
    out
}

const SIZES_JS: &str = "JSON.stringify([...document.querySelectorAll('figure')].map(f => {
  const e = f.querySelector('svg, img'); const r = e ? e.getBoundingClientRect() : {width: 0, height: 0};
  return {id: f.id || f.textContent.trim().slice(0, 40), tag: e ? e.tagName : null, w: r.width, h: r.height,
          decoded: e && e.tagName === 'IMG' ? (e.complete && e.naturalWidth > 0) : true};
}))";

#[test]
fn report_html_loads_cleanly_in_headless_chromium() {
    let Some(bin) = find_chromium() else {
        if std::env::var("DITBENCH_REQUIRE_CHROMIUM").as_deref() == Ok("1") {
            panic!("DITBENCH_REQUIRE_CHROMIUM=1 but no chromium on PATH (Debian: apt-get install -y chromium)");
        }
        eprintln!("SKIPPED: no chromium on PATH (set DITBENCH_REQUIRE_CHROMIUM=1 to make this a failure)");
        return;
    };
    let (tmp, root) = common::tempstore();
    common::write_sweep(&root, "paper", &common::paper_runs());
    let out = tmp.path().join("report");
    let mut opts = ditbench_report::ReportOptions::new("paper", &out);
    opts.bootstrap = 200;
    let rep = ditbench_report::write_report(&root, &opts).unwrap();

    // The escaping test's sweep: payloads in the sweep name and model strings.
    let xss_sweep = "<img src=x onerror=alert(1)>";
    let mut runs = Vec::new();
    for (i, g) in [1.0, 2.0, 4.0].into_iter().enumerate() {
        let mut r = common::RunPlan::new(&format!("x{i}\"><img src=y onerror=alert(3)>"), "<script>alert(1)</script>", 2, g);
        r.full_model = Some("</td><script>alert(2)</script>".into());
        r.evals = vec![(400_000, "fid".into(), 100.0 / (i + 1) as f64, 1.0)];
        r.samples = vec![400_000];
        runs.push(r);
    }
    common::write_sweep(&root, xss_sweep, &runs);
    let xss_out = tmp.path().join("xss");
    let mut xopts = ditbench_report::ReportOptions::new(xss_sweep, &xss_out);
    xopts.bootstrap = 50;
    let xss = ditbench_report::write_report(&root, &xopts).unwrap();

    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-browser");
    std::fs::create_dir_all(&artifacts).unwrap();
    let mut cdp = Cdp::open_page(&bin, &tmp.path().join("profile"));

    // The harness itself must see errors: a page with a broken image and a console.error.
    let bad = tmp.path().join("bad.html");
    std::fs::write(&bad, "<html><body><img src=\"missing.png\"><script>console.error('boom')</script></body></html>").unwrap();
    let ev = cdp.load(&format!("file://{}", bad.display()));
    let p = problems(&ev);
    assert!(p.iter().any(|x| x.contains("boom")) && p.iter().any(|x| x.contains("missing.png")), "{p:?}");

    // The paper's sweep gets the held-out prediction figure (S, B, L fit; XL predicted)
    // and the isoFLOP figure (its runs are evaluated at 5 steps); three runs of one size,
    // evaluated once each, cannot hold a size out, nor fit the joint law.
    for (name, rep, figures) in [("paper", &rep, 7 + 12), ("escaping", &xss, 5 + 3)] {
        let ev = cdp.load(&format!("file://{}", rep.html.display()));
        let p = problems(&ev);
        assert!(p.is_empty(), "{name}: {p:?}");
        let sizes: Vec<Value> = serde_json::from_str(cdp.eval(SIZES_JS).as_str().unwrap()).unwrap();
        assert_eq!(sizes.len(), figures, "{name}: {sizes:?}");
        for s in &sizes {
            assert!(s["w"].as_f64().unwrap() > 0.0 && s["h"].as_f64().unwrap() > 0.0, "{name}: zero-size figure {s}");
            assert_eq!(s["decoded"], true, "{name}: image not decoded {s}");
        }
        let scripts = cdp.eval("document.querySelectorAll('script').length").as_i64().unwrap();
        assert_eq!(scripts, 0, "{name}: script elements in the DOM");
        let title = cdp.eval("document.title").as_str().unwrap().to_string();
        assert!(title.starts_with("Scaling report: "), "{title}");
        if name == "escaping" {
            assert_eq!(title, format!("Scaling report: {xss_sweep}"), "the payload is shown as text");
            let foreign = cdp.eval("[...document.images].filter(i => !i.src.startsWith('data:')).length").as_i64().unwrap();
            assert_eq!(foreign, 0, "an injected <img> was parsed");
        }
        let shot = artifacts.join(format!("{name}.png"));
        cdp.screenshot(&shot);
        println!("screenshot: {}", shot.display());
    }
    cdp.close();
}
