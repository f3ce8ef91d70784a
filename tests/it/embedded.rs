//! The embedded cluster (no `DATABASE_URL`) is private: its superuser has a generated password
//! kept 0600 in `DATA_DIR`, nothing connects without it, and a cluster an older version left
//! open (`trust`) is closed on start, stopped or running.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use bengkel_whatsapp::db::embedded::{PASSWORD_FILE, find_bindir};

use crate::helpers::http_status;

const BIN: &str = env!("CARGO_BIN_EXE_bengkel-whatsapp");

fn data_dir(what: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{what}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A PostgreSQL server program run as the cluster's owner (`postgres` when we are root).
fn as_owner(program: &str, args: &[&str]) -> Output {
    let exe = find_bindir()
        .expect("PostgreSQL server binaries")
        .join(program);
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    let out = command.args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What a cluster created by an older version looked like: `initdb -A trust`.
fn open_cluster(dir: &Path) -> PathBuf {
    let datadir = dir.join("postgres");
    std::fs::create_dir_all(&datadir).unwrap();
    if is_root() {
        let chown = Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(&datadir)
            .status()
            .unwrap();
        assert!(chown.success());
    }
    let d = datadir.to_string_lossy();
    as_owner(
        "initdb",
        &["-D", &d, "-U", "postgres", "-A", "trust", "-E", "UTF8"],
    );
    datadir
}

/// `psql` over TCP to the cluster, with `password` or none at all (no `~/.pgpass` either).
fn psql(dir: &Path, port: u16, password: Option<&str>, sql: &str) -> Output {
    let psql = find_bindir().expect("PostgreSQL binaries").join("psql");
    let port = port.to_string();
    let mut c = Command::new(psql);
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        "postgres",
        "-d",
        "postgres",
    ])
    .args(["-X", "-A", "-t", "-w", "-c", sql])
    .env_remove("PGPASSWORD")
    .env("PGPASSFILE", dir.join("no-such-pgpass"))
    .env("PGCONNECT_TIMEOUT", "5");
    if let Some(p) = password {
        c.env("PGPASSWORD", p);
    }
    c.output().unwrap()
}

/// The port of the running cluster, from `postmaster.pid`.
fn cluster_port(dir: &Path) -> u16 {
    let pid = std::fs::read_to_string(dir.join("postgres/postmaster.pid")).unwrap();
    pid.lines().nth(3).unwrap().trim().parse().unwrap()
}

/// A `serve` on the embedded cluster of `dir`; terminated (gracefully) when dropped.
struct Serve(Child);

impl Serve {
    fn start(dir: &Path) -> Self {
        let port = free_port();
        let child = Command::new(BIN)
            .arg("serve")
            .env_remove("DATABASE_URL")
            .env_remove("JWT_SECRET")
            .env_remove("STARSENDER_API_KEY")
            .env("DATA_DIR", dir)
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let serve = Self(child);
        // Ready = the service connected with its password and found the schema migrated.
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_status(port, "/health/ready") != Some(200) {
            assert!(Instant::now() < deadline, "serve did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        serve
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// Only the password of `DATA_DIR/postgres-password` (mode 0600) gets in, and the server has
/// no rule other than scram-sha-256.
fn assert_private(dir: &Path) {
    let file = dir.join(PASSWORD_FILE);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} has mode {mode:o}", file.display());
    let password = std::fs::read_to_string(&file).unwrap();
    let port = cluster_port(dir);

    let none = psql(dir, port, None, "SELECT 1");
    assert!(
        !none.status.success(),
        "a connection without password got in"
    );
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("password"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
    let wrong = psql(dir, port, Some("not-the-password"), "SELECT 1");
    assert!(!wrong.status.success(), "a wrong password got in");

    let rules = psql(
        dir,
        port,
        Some(password.trim()),
        "SELECT string_agg(DISTINCT auth_method, ',') FROM pg_hba_file_rules",
    );
    assert!(
        rules.status.success(),
        "{}",
        String::from_utf8_lossy(&rules.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&rules.stdout).trim(),
        "scram-sha-256"
    );
}

#[test]
fn the_embedded_cluster_refuses_connections_without_its_password() {
    let dir = data_dir("embedded-private");
    let serve = Serve::start(&dir);
    assert_private(&dir);
    drop(serve);
    assert!(
        !dir.join("postgres/postmaster.pid").exists(),
        "the cluster is stopped with the last process"
    );
    // A second start reuses the cluster and its password.
    let password = std::fs::read_to_string(dir.join(PASSWORD_FILE)).unwrap();
    let serve = Serve::start(&dir);
    assert_eq!(
        std::fs::read_to_string(dir.join(PASSWORD_FILE)).unwrap(),
        password
    );
    assert_private(&dir);
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_cluster_an_older_version_left_open_is_closed_on_start() {
    for running in [false, true] {
        let dir = data_dir("embedded-upgrade");
        let datadir = open_cluster(&dir);
        if running {
            // As a killed process of the older version would have left it.
            let options = format!(
                "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''",
                free_port()
            );
            let d = datadir.to_string_lossy();
            let log = datadir.join("server.log");
            as_owner(
                "pg_ctl",
                &[
                    "start",
                    "-w",
                    "-D",
                    &d,
                    "-l",
                    &log.to_string_lossy(),
                    "-o",
                    &options,
                ],
            );
            let open = psql(&dir, cluster_port(&dir), None, "SELECT 1");
            assert!(open.status.success(), "the old cluster is open");
        }
        let serve = Serve::start(&dir);
        assert_private(&dir);
        drop(serve);
        assert!(
            !dir.join("postgres/postmaster.pid").exists(),
            "running={running}: the cluster is stopped with the last process"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
