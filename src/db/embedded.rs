//! The embedded default (SPEC §1): with `DATABASE_URL` unset, run a private PostgreSQL cluster in
//! `$DATA_DIR/postgres` from the server binaries installed on the machine. Created on first run,
//! reused after (also when a previous process died and left it running), stopped on shutdown by
//! the process that started it.
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
    /// Started by this process (and so stopped by it). A cluster found running belongs to
    /// another process — a `serve` while `demo-data` runs, or one that died — and is left alone.
    started_here: bool,
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
            started_here: false,
        };

        if !pg.datadir.join("PG_VERSION").exists() {
            pg.init()?;
        }
        if let Some(port) = pg.running_port() {
            tracing::info!(
                port,
                "embedded PostgreSQL already running in {}; reusing it (and leaving it running)",
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
        pg.started_here = true;
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

    pub fn stop(&self) {
        if !self.started_here {
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
