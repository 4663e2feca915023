//! `mailfront init DIR`: a starter configuration that `mailfront check` passes as written.
//!
//! It asks nothing. In `DIR` it writes whatever of these is missing, and never touches a file
//! that exists (so it is safe to run again, and the Debian package's `postinst` runs it to make
//! the per-machine secrets next to the configuration it ships):
//!
//! | file | what |
//! |---|---|
//! | `mailfront.toml` | the configuration: one mailbox server on 127.0.0.1, listeners on loopback |
//! | `users.toml` | the users file, with a commented example |
//! | `locations.toml` | the location map: `DB01` on `mbx1` |
//! | `tls/cert.pem`, `tls/key.pem` | a self-signed certificate for the node's name and `localhost` |
//! | `http/keys.toml` | a cookie key for the HTTPS front door |
//!
//! Secrets (the private key, the cookie key) are created with mode 0600, readable by their
//! owner only; the package gives them to the `mailfront` group.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The starter configuration; `@NODE@` is the node's name.
const CONFIG: &str = include_str!("mailfront.toml");
/// The starter users file.
const USERS: &str = include_str!("users.toml");
/// The starter location map.
const LOCATIONS: &str = include_str!("locations.toml");

/// Why `init` stopped.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A file or folder could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Half of the certificate pair exists: writing the other half would not match it.
    #[error(
        "{present} exists but {missing} does not; move {present} away (or add the matching file) and run init again"
    )]
    HalfACertificate {
        /// The file that exists.
        present: PathBuf,
        /// The file that does not.
        missing: PathBuf,
    },
    /// The certificate could not be made.
    #[error("cannot make a self-signed certificate: {0}")]
    Certificate(String),
}

/// What `init` did, file by file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Files written now.
    pub created: Vec<PathBuf>,
    /// Files that existed and were left alone.
    pub kept: Vec<PathBuf>,
}

/// Whether a file holds a secret (owner-only) or not.
#[derive(Clone, Copy)]
enum Mode {
    Public,
    Secret,
}

impl Mode {
    fn bits(self) -> u32 {
        match self {
            Mode::Public => 0o644,
            Mode::Secret => 0o600,
        }
    }
}

/// Writes the starter files missing from `dir` (made if needed) for a node called `node`.
pub fn init(dir: &Path, node: &str) -> Result<Report, InitError> {
    let mut report = Report::default();
    let config = CONFIG.replace("@NODE@", node);
    write_new(
        &mut report,
        &dir.join("mailfront.toml"),
        &config,
        Mode::Public,
    )?;
    write_new(&mut report, &dir.join("users.toml"), USERS, Mode::Public)?;
    write_new(
        &mut report,
        &dir.join("locations.toml"),
        LOCATIONS,
        Mode::Public,
    )?;
    certificate(&mut report, dir, node)?;
    let keys = mailfront_http::cookie::CookieKeys::generate_entry(1);
    let keys = format!(
        "# Keys that seal the HTTPS front door's cookies. Every node of an array needs the same\n\
         # file; `mailfront cookie-key --id N` prints a new key to add (the newest seals).\n{keys}"
    );
    write_new(
        &mut report,
        &dir.join("http/keys.toml"),
        &keys,
        Mode::Secret,
    )?;
    Ok(report)
}

/// The self-signed pair, unless both files exist.
fn certificate(report: &mut Report, dir: &Path, node: &str) -> Result<(), InitError> {
    let cert_path = dir.join("tls/cert.pem");
    let key_path = dir.join("tls/key.pem");
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            report.kept.push(cert_path);
            report.kept.push(key_path);
            return Ok(());
        }
        (true, false) => {
            return Err(InitError::HalfACertificate {
                present: cert_path,
                missing: key_path,
            });
        }
        (false, true) => {
            return Err(InitError::HalfACertificate {
                present: key_path,
                missing: cert_path,
            });
        }
        (false, false) => {}
    }
    let mut names = vec![node.to_owned(), "localhost".to_owned()];
    names.dedup();
    let pair = rcgen::generate_simple_self_signed(names)
        .map_err(|e| InitError::Certificate(e.to_string()))?;
    // The key first: a crash in between leaves a key without a certificate, which the next run
    // reports, never a certificate whose key is lost.
    write_new(
        report,
        &key_path,
        &pair.signing_key.serialize_pem(),
        Mode::Secret,
    )?;
    write_new(report, &cert_path, &pair.cert.pem(), Mode::Public)
}

/// Writes `path` with `text` if it does not exist (created exclusively: never overwritten).
fn write_new(report: &mut Report, path: &Path, text: &str, mode: Mode) -> Result<(), InitError> {
    let failed = |source| InitError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode.bits())
        .open(path);
    match file {
        Ok(mut file) => {
            file.write_all(text.as_bytes()).map_err(failed)?;
            file.sync_all().map_err(failed)?;
            report.created.push(path.to_owned());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            report.kept.push(path.to_owned());
            Ok(())
        }
        Err(e) => Err(failed(e)),
    }
}

/// The machine's host name, for the node's name (`cas1` if it cannot be read).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "cas1".to_owned())
}

/// What to do next, for the person who ran `init`.
pub fn next_steps(dir: &Path) -> String {
    let config = dir.join("mailfront.toml");
    let config = config.display();
    format!(
        "next:\n  \
         1. edit {config}: [[server]] (your mailbox servers), [tls] (your certificate), [[listener]] addresses\n  \
         2. add users to {users} (passwords from `mailfront hash-password`) and databases to {locations}\n  \
         3. mailfront check -c {config}\n  \
         4. mailfront serve -c {config}   (or: systemctl restart mailfront)\n",
        users = dir.join("users.toml").display(),
        locations = dir.join("locations.toml").display(),
    )
}

#[cfg(test)]
mod tests;
