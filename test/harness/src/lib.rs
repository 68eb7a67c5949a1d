//! Real servers for the data-path tests, as child processes on loopback:
//! an Elasticsearch node (Elastic's own distribution from Maven Central,
//! fetched by `cargo xtask`) and OpenTelemetry collectors (built by
//! `cargo xtask` with the Collector Builder).
//!
//! Plain std, no async: xtask uses it too. Every process is killed on drop,
//! so a failed test leaves nothing running.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub type Result<T> = std::result::Result<T, String>;

/// A free loopback port (bound and released; good enough for tests that
/// start one server at a time).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind a loopback port")
}

/// A minimal HTTP/1.1 request on loopback: (status, body). Enough to probe
/// health endpoints without an HTTP client dependency.
pub fn http(method: &str, port: u16, path: &str, body: Option<&str>) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut response = vec![];
    stream.read_to_end(&mut response).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP status in {text:.100}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, dechunk(&body)))
}

/// Undo `Transfer-Encoding: chunked` when the body looks chunked.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, tail)) = rest.split_once("\r\n") else { return body.to_string() };
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { return body.to_string() };
        if size == 0 {
            return out;
        }
        if tail.len() < size {
            return body.to_string();
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(format!("{what} not ready after {timeout:?}"))
}

/// A child process killed (SIGTERM, then SIGKILL) on drop.
pub struct Process {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        let file = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            .spawn()
            .map_err(|e| format!("starting {name} ({command:?}): {e}"))?;
        Ok(Self { name: name.into(), child: Some(child), log: log.into() })
    }

    /// Spawn, then wait until `ready` or the
    /// process dies; either failure carries the tail of its log.
    pub fn spawn_ready(
        name: &str,
        command: Command,
        log: &Path,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<Self> {
        let mut process = Self::spawn(name, command, log)?;
        let waited = wait_until(name, timeout, || !process.alive() || ready());
        if !process.alive() {
            return Err(format!("{name} exited during start:\n{}", process.log_tail()));
        }
        waited.map_err(|e| format!("{e}:\n{}", process.log_tail()))?;
        Ok(process)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGTERM and wait (up to 30 s), then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").arg(child.id().to_string()).stderr(Stdio::null()).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A single Elasticsearch node on loopback. Its data lives in `dir`, so a
/// node started again on the same `dir` keeps every acknowledged write.
pub struct Elasticsearch {
    pub port: u16,
    pub dir: PathBuf,
    home: PathBuf,
    /// Another local address it listens on besides loopback (the real
    /// node's bridge, so pods reach it).
    also_on: Option<String>,
    process: Option<Process>,
}

impl Elasticsearch {
    /// Start a node from the distribution in `home` (`$SECOP_ES_HOME`).
    pub fn start(home: &Path, dir: &Path, port: u16) -> Result<Self> {
        Self::start_listening(home, dir, port, None)
    }

    /// Like `start`, listening on `address` too (a local address, e.g. the
    /// real node's bridge); the tests still talk to it on loopback.
    pub fn start_also_on(home: &Path, dir: &Path, port: u16, address: &str) -> Result<Self> {
        Self::start_listening(home, dir, port, Some(address.into()))
    }

    fn start_listening(home: &Path, dir: &Path, port: u16, also_on: Option<String>) -> Result<Self> {
        let mut node = Self { port, dir: dir.into(), home: home.into(), also_on, process: None };
        node.start_again()?;
        Ok(node)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// (Re)start the node on its directory and wait until it is green.
    pub fn start_again(&mut self) -> Result<()> {
        if self.process.is_some() {
            return Ok(());
        }
        let dir = &self.dir;
        fs::create_dir_all(dir.join("tmp")).map_err(|e| e.to_string())?;
        if !dir.join("config").exists() {
            copy_dir(&self.home.join("config"), &dir.join("config"))?;
        }
        let java_home =
            std::env::var("ES_JAVA_HOME").or_else(|_| std::env::var("JAVA_HOME")).unwrap_or_else(|_| java_home());
        let heap = std::env::var("SECOP_ES_HEAP").unwrap_or_else(|_| "512m".into());
        let es = self.home.join("bin/elasticsearch");
        // Elasticsearch refuses to run as root; inside a user namespace the
        // same process is uid 1000 and can still write root's files.
        let mut command = if is_root() {
            let mut c = Command::new("unshare");
            c.args(["--user", "--map-user=1000", "--map-group=1000"]).arg(&es);
            c
        } else {
            Command::new(&es)
        };
        let p = |sub: &str| dir.join(sub).display().to_string();
        command
            .env("ES_JAVA_HOME", java_home)
            .env("ES_PATH_CONF", p("config"))
            .env("ES_TMPDIR", p("tmp"))
            .env("CLI_JAVA_OPTS", format!("-Djava.io.tmpdir={}", p("tmp")))
            .env("ES_JAVA_OPTS", format!("-Xms{heap} -Xmx{heap}"))
            .args(["-E", "discovery.type=single-node"])
            .args(match &self.also_on {
                None => vec!["-E".to_string(), "network.host=127.0.0.1".to_string()],
                Some(address) => {
                    ["-E", &format!("network.bind_host=127.0.0.1,{address}"), "-E", "network.publish_host=127.0.0.1"]
                        .map(String::from)
                        .to_vec()
                }
            })
            .args(["-E", &format!("http.port={}", self.port), "-E", &format!("transport.port={}", free_port())])
            .args(["-E", &format!("path.data={}", p("data")), "-E", &format!("path.logs={}", p("logs"))])
            .args([
                "-E",
                "xpack.security.enabled=false",
                "-E",
                "cluster.routing.allocation.disk.threshold_enabled=false",
            ])
            .args(["-E", "action.destructive_requires_name=false"]);
        let port = self.port;
        let process =
            Process::spawn_ready("elasticsearch", command, &dir.join("out.log"), Duration::from_secs(180), || {
                matches!(http("GET", port, "/_cluster/health?wait_for_status=yellow&timeout=1s", None), Ok((200, _)))
            })?;
        self.process = Some(process);
        Ok(())
    }

    /// Stop the node (clean shutdown), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop();
        }
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// The JDK that runs Elasticsearch: `java` on PATH, resolved.
fn java_home() -> String {
    let java = Command::new("sh").args(["-c", "readlink -f \"$(command -v java)\""]).output().ok();
    java.map(|o| String::from_utf8_lossy(&o.stdout).trim().trim_end_matches("/bin/java").to_string())
        .unwrap_or_default()
}

/// Copy a directory tree.
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).map_err(|e| e.to_string())?;
    for entry in fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// An OpenTelemetry collector running one config, with its health endpoint
/// on `health_port`.
pub struct Collector {
    pub process: Process,
    pub health_port: u16,
}

impl Collector {
    pub fn start(
        bin: &Path,
        name: &str,
        config: &Path,
        health_port: u16,
        env: &[(&str, String)],
        log: &Path,
    ) -> Result<Self> {
        let mut command = Command::new(bin);
        command.arg(format!("--config={}", config.display()));
        for (k, v) in env {
            command.env(k, v);
        }
        let process = Process::spawn_ready(name, command, log, Duration::from_secs(60), || {
            matches!(http("GET", health_port, "/", None), Ok((200, _)))
        })?;
        Ok(Self { process, health_port })
    }
}

/// `<dir>/config.yml` for Debian's docker-registry: storage under
/// `<dir>/data`, deletes allowed, plain HTTP on `127.0.0.1:<port>`.
pub fn write_registry_config(dir: &Path, port: u16) -> Result<PathBuf> {
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
        dir.join("data").display()
    );
    let path = dir.join("config.yml");
    std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// A real OCI registry (Debian's `docker-registry`, distribution 2.8) on
/// loopback, storing under `dir`. Stop and start it again to test a
/// registry outage; the blobs stay.
pub struct Registry {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
    process: Option<Process>,
}

impl Registry {
    pub fn start(bin: &Path, dir: &Path, port: u16) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        write_registry_config(dir, port)?;
        let mut registry = Self { bin: bin.to_path_buf(), dir: dir.to_path_buf(), port, process: None };
        registry.start_again()?;
        Ok(registry)
    }

    /// `127.0.0.1:<port>`, the registry part of an image reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn start_again(&mut self) -> Result<()> {
        let mut command = Command::new(&self.bin);
        command.arg("serve").arg(self.dir.join("config.yml"));
        let port = self.port;
        let process =
            Process::spawn_ready("registry", command, &self.dir.join("registry.log"), Duration::from_secs(30), || {
                matches!(http("GET", port, "/v2/", None), Ok((200, _)))
            })?;
        self.process = Some(process);
        Ok(())
    }

    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop();
        }
    }
}

/// `<collector> validate --config=<file>`: Ok, or the collector's complaint.
pub fn validate_collector_config(bin: &Path, config: &Path, env: &[(&str, String)]) -> Result<()> {
    let mut command = Command::new(bin);
    command.arg("validate").arg(format!("--config={}", config.display()));
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().map_err(|e| format!("running {}: {e}", bin.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "hello world");
        assert_eq!(dechunk("{\"a\":1}"), "{\"a\":1}");
    }
}
