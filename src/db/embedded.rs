//! The embedded default (README "Commands"): with `DATABASE_URL` unset, run a private PostgreSQL cluster in
//! `$DATA_DIR/postgres` from the server binaries installed on the machine. Created on first run,
//! reused after (also when a previous process died and left it running), and stopped on shutdown
//! by the last process using it.
//! PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` system user.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

pub struct EmbeddedPostgres {
    bindir: PathBuf,
    datadir: PathBuf,
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
        let datadir = std::fs::canonicalize(data_dir)?.join("postgres");
        let run_as = if is_root() {
            Some("postgres".to_owned())
        } else {
            None
        };
        let mut pg = Self {
            bindir,
            datadir,
            run_as,
            port: 0,
        };

        if !pg.datadir.join("PG_VERSION").exists() {
            pg.init()?;
        }
        if let Some(port) = pg.running_port() {
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

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
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
            let out = Command::new(self.bindir.join("psql"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                ])
                .args(["-X", "-A", "-t", "-c", &sql])
                .env("PGCONNECT_TIMEOUT", "5")
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
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
        )
        .context("initdb failed")
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
fn find_bindir() -> Option<PathBuf> {
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
