//! The files under `deploy/` against the real binary: every flag they pass
//! is one `redoubt serve` accepts, the ports are its defaults, the probe
//! paths answer, and the systemd unit verifies. The workspace has no YAML
//! parser, and these files are small and written to be checked as text.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use test_support::{free_port, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_redoubt");

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn read(name: &str) -> String {
    let p = deploy_dir().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn serve_help() -> String {
    let o = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    String::from_utf8(o.stdout).unwrap()
}

/// `--long` flags in `text`.
fn flags_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_string)
        .collect()
}

/// The port of `(default HOST:PORT)` on the help line of `flag`.
fn default_port(help: &str, flag: &str) -> String {
    // The flag's entry: its line and, in clap's long layout, the lines
    // under it.
    let start = help
        .find(&format!("{flag} <"))
        .unwrap_or_else(|| panic!("{flag} not in:\n{help}"));
    let entry = &help[start..];
    let entry = &entry[..entry.find("\n\n").unwrap_or(entry.len())];
    let default = entry
        .split("(default ")
        .nth(1)
        .unwrap_or_else(|| panic!("no default for {flag} in:\n{entry}"));
    default
        .split(')')
        .next()
        .and_then(|a| a.rsplit(':').next())
        .unwrap()
        .to_string()
}

/// The `serve` arguments of a flow-style list such as
/// `CMD ["serve", "--listen", "0.0.0.0:6380"]`: the one line holding `"serve"`.
fn serve_args(file: &str, text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("\"serve\"")).collect();
    assert_eq!(lines.len(), 1, "{file}: one serve command line: {lines:?}");
    let list = lines[0]
        .split('[')
        .nth(1)
        .unwrap()
        .split(']')
        .next()
        .unwrap();
    list.split(',')
        .map(|a| a.trim().trim_matches('"').to_string())
        .collect()
}

/// The value following `flag` in `args`.
fn arg<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

#[test]
fn every_flag_the_deploy_files_pass_is_one_serve_accepts() {
    let accepted = flags_in(&serve_help());
    assert!(accepted.contains("--upstream") && accepted.contains("--data-dir"));
    let unit = read("redoubt.service");
    let exec = unit
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("ExecStart");
    assert!(exec.contains("/redoubt serve "), "{exec}");
    let invocations = [
        (
            "Dockerfile",
            serve_args("Dockerfile", &read("Dockerfile")).join(" "),
        ),
        (
            "docker-compose.yml",
            serve_args("docker-compose.yml", &read("docker-compose.yml")).join(" "),
        ),
        (
            "kubernetes/sidecar.yaml",
            serve_args("sidecar.yaml", &read("kubernetes/sidecar.yaml")).join(" "),
        ),
        ("redoubt.service", exec.to_string()),
    ];
    for (file, line) in invocations {
        let used = flags_in(&line);
        assert!(!used.is_empty(), "{file}: {line}");
        for f in &used {
            assert!(
                accepted.contains(f),
                "{file}: {f} is not a `redoubt serve` flag ({accepted:?})"
            );
        }
    }
    // The image's entry point is the binary, so CMD/command/args start at the subcommand.
    assert!(read("Dockerfile").contains("ENTRYPOINT [\"redoubt\"]"));
}

#[test]
fn ports_and_probes_match_the_defaults() {
    let help = serve_help();
    let resp = default_port(&help, "--listen");
    let admin = default_port(&help, "--admin");
    assert_eq!((resp.as_str(), admin.as_str()), ("6380", "9380"), "{help}");

    let docker = read("Dockerfile");
    assert!(
        docker.contains(&format!("EXPOSE {resp} {admin}")),
        "{docker}"
    );
    let args = serve_args("Dockerfile", &docker);
    assert_eq!(arg(&args, "--listen"), Some(&*format!("0.0.0.0:{resp}")));
    assert_eq!(arg(&args, "--admin"), Some(&*format!("0.0.0.0:{admin}")));
    assert!(
        docker.contains(&format!("/dev/tcp/127.0.0.1/{admin}")),
        "{docker}"
    );
    assert!(docker.contains("GET /healthz "), "{docker}");
    assert!(docker.contains("USER 10001"), "{docker}");

    let compose = read("docker-compose.yml");
    let args = serve_args("docker-compose.yml", &compose);
    assert_eq!(arg(&args, "--upstream"), Some("redis://redis:6379"));
    assert_eq!(arg(&args, "--listen"), Some(&*format!("0.0.0.0:{resp}")));
    assert_eq!(arg(&args, "--admin"), Some(&*format!("0.0.0.0:{admin}")));
    assert_eq!(arg(&args, "--data-dir"), Some("/var/lib/redoubt"));
    assert!(
        compose.contains("redoubt-data:/var/lib/redoubt"),
        "{compose}"
    );
    assert!(
        compose.contains(&format!("redis://redoubt:{resp}")),
        "{compose}"
    );
    assert!(compose.contains("\"--appendonly\", \"yes\""), "{compose}");
    assert!(compose.contains("restart: unless-stopped"), "{compose}");
    assert!(
        compose.contains("REDOUBT_ADMIN_TOKEN"),
        "admin beyond loopback needs a token"
    );

    let k8s = read("kubernetes/sidecar.yaml");
    let args = serve_args("sidecar.yaml", &k8s);
    assert_eq!(arg(&args, "--listen"), Some(&*format!("127.0.0.1:{resp}")));
    assert_eq!(arg(&args, "--admin"), Some(&*format!("0.0.0.0:{admin}")));
    assert_eq!(arg(&args, "--data-dir"), Some("/var/lib/redoubt"));
    assert!(k8s.contains(&format!("redis://127.0.0.1:{resp}")), "{k8s}");
    assert!(k8s.contains(&format!("containerPort: {admin}")), "{k8s}");
    assert!(
        k8s.contains("REDOUBT_ADMIN_TOKEN"),
        "admin beyond loopback needs a token"
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let after = k8s
            .split(&format!("{probe}:"))
            .nth(1)
            .unwrap_or_else(|| panic!("{probe}"));
        let block: String = after.lines().take(4).collect::<Vec<_>>().join("\n");
        assert!(block.contains(&format!("path: {path}")), "{probe}: {block}");
        assert!(block.contains("port: admin"), "{probe}: {block}");
    }
    assert!(k8s.contains("mountPath: /var/lib/redoubt"), "{k8s}");

    let unit = read("redoubt.service");
    for line in [
        "StateDirectory=redoubt",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "Restart=always",
        "LoadCredential=redoubt.toml:/etc/redoubt/redoubt.toml",
        // Redoubt does not call sd_notify.
        "Type=simple",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing:\n{unit}");
    }
}

fn http_get(port: u16, path: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn the_probe_paths_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .current_dir(dir.path())
        .env_remove("REDOUBT_UPSTREAM")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("admin to listen", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", admin)).is_ok()
    });
    let codes = (http_get(admin, "/healthz"), http_get(admin, "/readyz"));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(codes, (200, 200), "standalone is ready at once");
}

#[test]
fn the_systemd_unit_verifies() {
    let Ok(o) = Command::new("systemd-analyze").arg("--version").output() else {
        println!("systemd-analyze not found: the unit was not verified");
        return;
    };
    assert!(o.status.success());
    // verify wants ExecStart's binary to exist: point it at this build.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("redoubt.service");
    let text = read("redoubt.service").replace("/usr/local/bin/redoubt", BIN);
    std::fs::write(&unit, text).unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{out}");
    // Unknown or misspelt directives are only warnings, exit 0 included.
    let about_unit: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("redoubt.service"))
        .collect();
    assert!(about_unit.is_empty(), "{out}");
}
