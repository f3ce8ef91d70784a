//! The embedded default (README "Commands"): with `DATABASE_URL` unset, run a private PostgreSQL cluster in
//! `$DATA_DIR/postgres` from the server binaries installed on the machine. Created on first run,
//! reused after (also when a previous process died and left it running), and stopped on shutdown
//! by the last process using it.
//! PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` system user.
//!
//! The cluster is private: it listens on 127.0.0.1 only, without a unix socket, and every
//! connection needs the superuser's password (scram-sha-256), generated on first run and kept in
//! `$DATA_DIR/postgres-password` (0600, readable by the service's own user only). A cluster
//! created by an older version with `trust` authentication is upgraded on start: the password is
//! set first, then `pg_hba.conf` is rewritten, so that no step leaves it open or locks us out.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

/// The superuser's password, next to the cluster directory (not in it: `initdb` wants an empty
/// directory, and as root the cluster directory belongs to the `postgres` system user).
pub const PASSWORD_FILE: &str = "postgres-password";

/// The only access rule: password over TCP from the loopback. No unix socket is opened.
const HBA: &str = "# Written by bengkel-whatsapp (rewritten on start if changed): the embedded cluster\n\
                   # accepts password (scram-sha-256) connections over TCP from 127.0.0.1 only.\n\
                   host all all 127.0.0.1/32 scram-sha-256\n";

pub struct EmbeddedPostgres {
    bindir: PathBuf,
    datadir: PathBuf,
    password_file: PathBuf,
    password: String,
    run_as: Option<String>,
    port: u16,
}

impl EmbeddedPostgres {
    /// Finds the binaries, creates the cluster if needed and starts it (or finds it running).
    pub fn start(data_dir: &Path) -> anyhow::Result<Self> {
        let bindir = find_bindir().ok_or_else(|| {
            anyhow::anyhow!(
                "DATABASE_URL is not set and no PostgreSQL server binaries were found \
                 (looked at `pg_config --bindir`, /usr/lib/postgresql/*/bin and PATH). \
                 Either install PostgreSQL (e.g. `apt-get install postgresql`) or set DATABASE_URL \
                 to an existing database."
            )
        })?;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create DATA_DIR {}", data_dir.display()))?;
        let data_dir = std::fs::canonicalize(data_dir)?;
        let run_as = if is_root() {
            Some("postgres".to_owned())
        } else {
            None
        };
        let mut pg = Self {
            bindir,
            datadir: data_dir.join("postgres"),
            password_file: data_dir.join(PASSWORD_FILE),
            password: String::new(),
            run_as,
            port: 0,
        };

        if !pg.datadir.join("PG_VERSION").exists() {
            pg.init()?;
        }
        let running = pg.running_port();
        pg.secure(running)?;
        if let Some(port) = running {
            tracing::info!(
                port,
                "embedded PostgreSQL already running in {}; reusing it",
                pg.datadir.display()
            );
            pg.port = port;
            return Ok(pg);
        }
        pg.port = free_port()?;
        pg.run(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                &pg.datadir.to_string_lossy(),
                "-l",
                &pg.datadir.join("server.log").to_string_lossy(),
                "-o",
                &format!(
                    "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''",
                    pg.port
                ),
            ],
        )
        .context("could not start the embedded PostgreSQL (see DATA_DIR/postgres/server.log)")?;
        tracing::info!(
            port = pg.port,
            "embedded PostgreSQL started in {}",
            pg.datadir.display()
        );
        Ok(pg)
    }

    /// The connection URL, with the password (hex, so nothing to escape).
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/postgres",
            self.password, self.port
        )
    }

    /// Stops the cluster unless another process still uses it (the last one out stops it: a
    /// `demo-data` next to a `serve`, or a `serve` shutting down while a new one has started).
    pub fn stop(&self) {
        if self.used_by_others() {
            tracing::info!("embedded PostgreSQL left running: another process is using it");
            return;
        }
        if let Err(e) = self.run(
            "pg_ctl",
            &[
                "stop",
                "-m",
                "fast",
                "-w",
                "-D",
                &self.datadir.to_string_lossy(),
            ],
        ) {
            tracing::warn!("could not stop the embedded PostgreSQL: {e:#}");
        } else {
            tracing::info!("embedded PostgreSQL stopped");
        }
    }

    /// Client connections of other processes. This process has closed its pools by now; their
    /// backends can take a moment to go, so a few looks a little apart.
    fn used_by_others(&self) -> bool {
        let sql = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
             AND pid <> pg_backend_pid() AND application_name <> '{}'",
            super::application_name()
        );
        let port = self.port.to_string();
        for look in 0..5 {
            if look > 0 {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            let out = self
                .psql(&port)
                .args(["-X", "-A", "-t", "-w", "-c", &sql])
                .env("PGCONNECT_TIMEOUT", "5")
                .env("PGPASSWORD", &self.password)
                .output();
            match out {
                Ok(o) if o.status.success() => {
                    let others: u64 = String::from_utf8_lossy(&o.stdout)
                        .trim()
                        .parse()
                        .unwrap_or(0);
                    if others == 0 {
                        return false;
                    }
                }
                // Cannot ask: stop as before rather than leave a server behind.
                _ => return false,
            }
        }
        true
    }

    fn init(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.datadir)?;
        if let Some(user) = &self.run_as {
            let status = Command::new("chown")
                .args(["-R", &format!("{user}:"), &self.datadir.to_string_lossy()])
                .status()
                .context("chown of the embedded cluster directory failed")?;
            if !status.success() {
                bail!("chown {user} {} failed", self.datadir.display());
            }
        }
        tracing::info!(
            "creating the embedded PostgreSQL cluster in {}",
            self.datadir.display()
        );
        self.run(
            "initdb",
            &[
                "-D",
                &self.datadir.to_string_lossy(),
                "-U",
                "postgres",
                // Nobody gets in until `secure` has set the password and written our rules.
                "-A",
                "reject",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
        )
        .context("initdb failed")
    }

    /// Makes sure the superuser has the password of `DATA_DIR/postgres-password` (created if
    /// missing) and `pg_hba.conf` is ours. A new cluster (`initdb -A reject`) and one created by
    /// an older version with `trust` both go through here once. The password is set before the
    /// rules change, and the file is written before either, so a crash at any point is repaired
    /// by the next start.
    fn secure(&mut self, running: Option<u16>) -> anyhow::Result<()> {
        let stored = self.read_password()?;
        let hba_path = self.datadir.join("pg_hba.conf");
        let hba = std::fs::read_to_string(&hba_path)
            .with_context(|| format!("cannot read {}", hba_path.display()))?;
        if let Some(password) = &stored
            && hba == HBA
        {
            self.password = password.clone();
            return Ok(());
        }
        let password = match stored {
            Some(p) => p,
            None => {
                let p = format!(
                    "{}{}",
                    uuid::Uuid::new_v4().simple(),
                    uuid::Uuid::new_v4().simple()
                );
                write_private(&self.password_file, &p)?;
                p
            }
        };
        if hba.lines().any(|l| {
            let l = l.trim();
            !l.starts_with('#') && l.split_whitespace().any(|w| w == "trust")
        }) {
            tracing::warn!(
                "the embedded PostgreSQL in {} accepted local connections without a password \
                 (created by an older version); setting a password and requiring it",
                self.datadir.display()
            );
        }
        let sql = format!(
            "SET password_encryption = 'scram-sha-256';\nALTER ROLE postgres WITH PASSWORD '{password}';\n"
        );
        match running {
            None => self.single_user(&sql, &password)?,
            Some(port) => self.psql_with_password(port, &sql, &password).with_context(|| {
                format!(
                    "the embedded PostgreSQL in {} is running and does not accept the password in {}; \
                     stop it (`pg_ctl stop -D {}`) and start again, so the password can be reset",
                    self.datadir.display(),
                    self.password_file.display(),
                    self.datadir.display()
                )
            })?,
        }
        std::fs::write(&hba_path, HBA)
            .with_context(|| format!("cannot write {}", hba_path.display()))?;
        if running.is_some() {
            self.run("pg_ctl", &["reload", "-D", &self.datadir.to_string_lossy()])
                .context("could not reload the embedded PostgreSQL's pg_hba.conf")?;
        }
        self.password = password;
        tracing::info!(
            "embedded PostgreSQL requires the password in {}",
            self.password_file.display()
        );
        Ok(())
    }

    /// The password of `DATA_DIR/postgres-password`, its mode brought back to 0600.
    fn read_password(&self) -> anyhow::Result<Option<String>> {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::read_to_string(&self.password_file) {
            Ok(p) if !p.trim().is_empty() => {
                std::fs::set_permissions(
                    &self.password_file,
                    std::fs::Permissions::from_mode(0o600),
                )?;
                Ok(Some(p.trim().to_owned()))
            }
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("cannot read {}", self.password_file.display()))
            }
        }
    }

    /// Runs `sql` in single-user mode: the server is stopped, nothing listens, no rule applies.
    fn single_user(&self, sql: &str, password: &str) -> anyhow::Result<()> {
        let datadir = self.datadir.to_string_lossy();
        let mut command = self.command("postgres", &["--single", "-D", &datadir, "postgres"]);
        self.feed(&mut command, sql, password)
            .context("could not set the embedded PostgreSQL's password (single-user mode)")
    }

    /// `psql` to the cluster's superuser database over TCP on 127.0.0.1.
    fn psql(&self, port: &str) -> Command {
        let mut command = Command::new(self.bindir.join("psql"));
        command.args([
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-U",
            "postgres",
            "-d",
            "postgres",
        ]);
        command
    }

    /// Runs `sql` on the running server over TCP, with the password (a `trust` rule ignores it).
    fn psql_with_password(&self, port: u16, sql: &str, password: &str) -> anyhow::Result<()> {
        let port = port.to_string();
        let mut command = self.psql(&port);
        command
            .args(["-X", "-q", "-w", "-v", "ON_ERROR_STOP=1"])
            .env("PGCONNECT_TIMEOUT", "5")
            .env("PGPASSWORD", password);
        self.feed(&mut command, sql, password)
    }

    /// Runs `command` with `sql` on its stdin (never on its command line, where `ps` shows it);
    /// the password is masked in any error output.
    fn feed(&self, command: &mut Command, sql: &str, password: &str) -> anyhow::Result<()> {
        use std::{io::Write, process::Stdio};
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run a PostgreSQL program")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(sql.as_bytes())?;
        }
        let output = child.wait_with_output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
        .replace(password, "***");
        // Single-user mode reports a failed statement on its output but still exits 0.
        if !output.status.success() || text.contains("ERROR:") || text.contains("FATAL:") {
            bail!("{}", text.trim());
        }
        Ok(())
    }

    /// The port of a server already running on this data directory, from `postmaster.pid`.
    fn running_port(&self) -> Option<u16> {
        let running = self
            .command("pg_ctl", &["status", "-D", &self.datadir.to_string_lossy()])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !running {
            return None;
        }
        let pid = std::fs::read_to_string(self.datadir.join("postmaster.pid")).ok()?;
        pid.lines().nth(3)?.trim().parse().ok()
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let exe = self.bindir.join(program);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new(runuser());
                c.arg("-u").arg(user).arg("--").arg(exe).args(args);
                c
            }
            None => {
                let mut c = Command::new(exe);
                c.args(args);
                c
            }
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let output = self
            .command(program, args)
            .output()
            .with_context(|| format!("cannot run {program}"))?;
        if !output.status.success() {
            bail!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

/// Writes a secret readable by this user only (0600).
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut file, contents.as_bytes())?;
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin`, then `PATH`.
pub fn find_bindir() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&dir) {
            return Some(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_server(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Some(dir);
    }
    std::env::var_os("PATH").and_then(|path| std::env::split_paths(&path).find(|d| has_server(d)))
}

/// `runuser` lives in `/usr/sbin`, which a non-login root shell's `PATH` may lack.
fn runuser() -> std::path::PathBuf {
    ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| "runuser".into())
}
